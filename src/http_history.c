/* http_history: per-service samples over the last minutes. See
 * http_history.h. */
#include "http_history.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

typedef struct {
    uint64_t ok, failed;
    uint64_t buckets[METRICS_BUCKETS];
} sample_t;

typedef struct {
    char name[NAME_MAX_LEN + 1];
    uint32_t instances;
    sample_t samples[HTTP_HISTORY_POINTS];   /* by slot, as `times` */
} series_t;

struct http_history {
    uint64_t times[HTTP_HISTORY_POINTS];     /* when each slot's sample was taken */
    int count;                               /* slots in use */
    int newest;                              /* the slot of the last sample */
    series_t *series[HTTP_HISTORY_SERVICES];
    int series_count;
};

http_history_t *http_history_new(void)
{
    return calloc(1, sizeof(http_history_t));
}

void http_history_free(http_history_t **self_p)
{
    http_history_t *h = *self_p;
    if (!h)
        return;
    for (int i = 0; i < h->series_count; i++)
        free(h->series[i]);
    free(h);
    *self_p = NULL;
}

static int totals_by_name(const void *key, const void *item)
{
    return strcmp(key, ((const http_service_totals_t *)item)->name);
}

static void sample_of(sample_t *out, const http_service_totals_t *t)
{
    out->ok = t->ok;
    out->failed = t->failed;
    memcpy(out->buckets, t->buckets, sizeof out->buckets);
}

static bool known(const http_history_t *h, const char *name)
{
    for (int i = 0; i < h->series_count; i++)
        if (strcmp(h->series[i]->name, name) == 0)
            return true;
    return false;
}

void http_history_add(http_history_t *h, const http_snapshot_t *s)
{
    if (h->count && s->taken_ms < h->times[h->newest] + HTTP_HISTORY_STEP_MS)
        return;
    int previous = h->newest;
    h->newest = h->count ? (h->newest + 1) % HTTP_HISTORY_POINTS : 0;
    if (h->count < HTTP_HISTORY_POINTS)
        h->count++;
    h->times[h->newest] = s->taken_ms;
    for (int i = 0; i < h->series_count; i++) {
        series_t *ser = h->series[i];
        const http_service_totals_t *t = bsearch(ser->name, s->services, s->service_count,
                                                 sizeof *s->services, totals_by_name);
        if (t) {
            sample_of(&ser->samples[h->newest], t);
            ser->instances = t->instances;
        } else {            /* gone from the metrics: nothing more happened */
            ser->samples[h->newest] = ser->samples[previous];
            ser->instances = 0;
        }
    }
    /* services seen for the first time: their totals so far are the
     * baseline of every slot (no rate before they were seen) */
    for (size_t k = 0; k < s->service_count && h->series_count < HTTP_HISTORY_SERVICES; k++) {
        const http_service_totals_t *t = &s->services[k];
        if (known(h, t->name))
            continue;
        series_t *ser = calloc(1, sizeof *ser);
        if (!ser)
            return;
        memcpy(ser->name, t->name, sizeof ser->name);
        ser->instances = t->instances;
        for (int slot = 0; slot < HTTP_HISTORY_POINTS; slot++)
            sample_of(&ser->samples[slot], t);
        h->series[h->series_count++] = ser;
    }
}

double http_quantile_ms(const uint64_t buckets[METRICS_BUCKETS], double q)
{
    uint64_t total = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++)
        total += buckets[i];
    if (!total)
        return -1;
    const double *bound = metrics_bucket_bounds();
    double rank = q * (double)total, below = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (below + (double)buckets[i] >= rank && buckets[i]) {
            if (i == METRICS_BUCKETS - 1)       /* +Inf: the top finite bound */
                return bound[i - 1] * 1000;
            double lower = i ? bound[i - 1] : 0, upper = bound[i];
            return (lower + (upper - lower) * (rank - below) / (double)buckets[i]) * 1000;
        }
        below += (double)buckets[i];
    }
    return bound[METRICS_BUCKETS - 2] * 1000;
}

/* What happened between two samples: rates a second and quantiles. */
typedef struct {
    double ok_per_s, failed_per_s, p50_ms, p99_ms;
    uint64_t requests;
} span_t;

static span_t span_of(const sample_t *from, const sample_t *to, uint64_t ms)
{
    span_t sp = {0};
    double secs = ms ? (double)ms / 1000.0 : 1;
    uint64_t delta[METRICS_BUCKETS];
    for (int i = 0; i < METRICS_BUCKETS; i++)
        delta[i] = to->buckets[i] - from->buckets[i];
    sp.requests = (to->ok - from->ok) + (to->failed - from->failed);
    sp.ok_per_s = (double)(to->ok - from->ok) / secs;
    sp.failed_per_s = (double)(to->failed - from->failed) / secs;
    sp.p50_ms = http_quantile_ms(delta, 0.5);
    sp.p99_ms = http_quantile_ms(delta, 0.99);
    return sp;
}

/* A number, or null for "no answers to measure" (negative). */
static cJSON *number_or_null(double v)
{
    return v < 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)(int64_t)(v * 1000) / 1000);
}

static void add_span(cJSON *obj, const span_t *sp)
{
    cJSON_AddItemToObject(obj, "ok_per_s", number_or_null(sp->ok_per_s));
    cJSON_AddItemToObject(obj, "failed_per_s", number_or_null(sp->failed_per_s));
    cJSON_AddItemToObject(obj, "p50_ms", number_or_null(sp->p50_ms));
    cJSON_AddItemToObject(obj, "p99_ms", number_or_null(sp->p99_ms));
    cJSON_AddNumberToObject(obj, "requests", (double)sp->requests);
}

/* The slot `back` samples before the newest (0: the newest). */
static int slot_back(const http_history_t *h, int back)
{
    return (h->newest - back + HTTP_HISTORY_POINTS) % HTTP_HISTORY_POINTS;
}

char *http_history_json(const http_history_t *h)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddNumberToObject(root, "step_s", HTTP_HISTORY_STEP_MS / 1000.0);
    cJSON_AddNumberToObject(root, "window_s", HTTP_HISTORY_WINDOW_MS / 1000.0);
    /* the window: from the newest sample back to the last one at least a
     * window older (or the oldest kept) */
    int window_back = h->count ? h->count - 1 : 0;
    for (int back = 1; back < h->count; back++)
        if (h->times[h->newest] - h->times[slot_back(h, back)] >= HTTP_HISTORY_WINDOW_MS) {
            window_back = back;
            break;
        }
    cJSON *ago = cJSON_AddArrayToObject(root, "ago_s");
    for (int back = h->count - 2; back >= 0; back--)
        cJSON_AddItemToArray(ago, cJSON_CreateNumber(
            -(double)(h->times[h->newest] - h->times[slot_back(h, back)]) / 1000.0));
    cJSON *list = cJSON_AddArrayToObject(root, "services");
    for (int i = 0; i < h->series_count; i++) {
        const series_t *ser = h->series[i];
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", ser->name);
        cJSON_AddNumberToObject(item, "instances", ser->instances);
        span_t window = {0};
        if (h->count > 1) {
            int from = slot_back(h, window_back);
            window = span_of(&ser->samples[from], &ser->samples[h->newest],
                             h->times[h->newest] - h->times[from]);
        } else {
            window.p50_ms = window.p99_ms = -1;
        }
        add_span(cJSON_AddObjectToObject(item, "window"), &window);
        cJSON *ok = cJSON_AddArrayToObject(item, "ok_per_s");
        cJSON *failed = cJSON_AddArrayToObject(item, "failed_per_s");
        cJSON *p50 = cJSON_AddArrayToObject(item, "p50_ms");
        cJSON *p99 = cJSON_AddArrayToObject(item, "p99_ms");
        for (int back = h->count - 2; back >= 0; back--) {
            int from = slot_back(h, back + 1), to = slot_back(h, back);
            span_t sp = span_of(&ser->samples[from], &ser->samples[to], h->times[to] - h->times[from]);
            cJSON_AddItemToArray(ok, number_or_null(sp.ok_per_s));
            cJSON_AddItemToArray(failed, number_or_null(sp.failed_per_s));
            cJSON_AddItemToArray(p50, number_or_null(sp.p50_ms));
            cJSON_AddItemToArray(p99, number_or_null(sp.p99_ms));
        }
        cJSON_AddItemToArray(list, item);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}
