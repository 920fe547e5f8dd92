/* metrics: request series, latency histograms, JSON and Prometheus text.
 * See metrics.h. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* upper bounds of the latency buckets, in seconds (the last is +Inf) */
static const double bounds_s[METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 1e300,
};

metrics_t *metrics_new(void) { return calloc(1, sizeof(metrics_t)); }

void metrics_free(metrics_t **self_p)
{
    metrics_t *m = *self_p;
    if (!m)
        return;
    metric_series_t *s, *tmp;
    HASH_ITER(hh, m->series, s, tmp) {
        HASH_DEL(m->series, s);
        free(s);
    }
    free(m);
    *self_p = NULL;
}

static size_t make_key(char *key, const char *service, size_t slen, const char *action, size_t alen)
{
    memcpy(key, service, slen);
    key[slen] = '\0';
    memcpy(key + slen + 1, action, alen);
    key[slen + 1 + alen] = '\0';
    return slen + 1 + alen;
}

metric_series_t *metrics_series(metrics_t *m, const envelope_t *env)
{
    const env_value_t *dst = &env->f[EF_DST], *act = &env->f[EF_ACTION];
    char key[sizeof((metric_series_t *)0)->key];
    const char *action = act->ptr;
    size_t alen = act->len;
    if (!env_is_plain_string(act) || alen > MSG_ID_MAX_LEN) {
        action = "(other)";
        alen = 7;
    }
    size_t len = make_key(key, dst->ptr, dst->len, action, alen);
    metric_series_t *s = NULL;
    HASH_FIND(hh, m->series, key, len, s);
    if (s)
        return s;
    if (m->count >= METRICS_MAX_SERIES) {
        len = make_key(key, dst->ptr, dst->len, "(other)", 7);
        HASH_FIND(hh, m->series, key, len, s);
        if (s || m->count >= METRICS_MAX_SERIES + 100)
            return s;            /* past even the overflow room: not counted */
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    memcpy(s->key, key, len + 1);
    s->key_len = len;
    HASH_ADD(hh, m->series, key[0], len, s);
    m->count++;
    return s;
}

void metrics_answered(metric_series_t *s, uint64_t latency_us)
{
    if (!s)
        return;
    double secs = (double)latency_us / 1e6;
    s->answered++;
    s->latency_sum_s += secs;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (secs <= bounds_s[i]) {
            s->buckets[i]++;
            break;
        }
    }
}

void metrics_failed(metric_series_t *s)
{
    if (s)
        s->failed++;
}

/* The latency below which `q` of the answered requests fell, from the
 * buckets (an upper bound, in ms). */
static double quantile_ms(const metric_series_t *s, double q)
{
    if (!s->answered)
        return 0;
    uint64_t want = (uint64_t)(q * (double)s->answered + 0.999999), seen = 0;
    for (int i = 0; i < METRICS_BUCKETS - 1; i++) {
        seen += s->buckets[i];
        if (seen >= want)
            return bounds_s[i] * 1000;
    }
    return bounds_s[METRICS_BUCKETS - 2] * 1000;
}

cJSON *metrics_json(const metrics_t *m)
{
    cJSON *payload = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(payload, "series");
    for (const metric_series_t *s = m->series; s; s = s->hh.next) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "service", s->key);
        cJSON_AddStringToObject(item, "action", s->key + strlen(s->key) + 1);
        cJSON_AddNumberToObject(item, "requests", (double)s->requests);
        cJSON_AddNumberToObject(item, "answered", (double)s->answered);
        cJSON_AddNumberToObject(item, "failed", (double)s->failed);
        cJSON *lat = cJSON_AddObjectToObject(item, "latency_ms");
        cJSON_AddNumberToObject(lat, "p50_le", quantile_ms(s, 0.5));
        cJSON_AddNumberToObject(lat, "p99_le", quantile_ms(s, 0.99));
        cJSON_AddNumberToObject(lat, "mean", s->answered ? s->latency_sum_s * 1000 / (double)s->answered : 0);
        cJSON_AddItemToArray(list, item);
    }
    return payload;
}

/* --- Prometheus text --- */

typedef struct {
    char *text;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->text ? b->text + b->len : NULL, b->text ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->text && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *grown = realloc(b->text, cap);
        if (!grown)
            return;
        b->text = grown;
        b->cap = cap;
    }
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static void put_label(buf_t *b, const char *value)
{
    for (const char *c = value; *c; c++) {
        if (*c == '\\' || *c == '"')
            put(b, "\\%c", *c);
        else if (*c == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *c);
    }
}

static void by_type(buf_t *b, const char *name, const char *help, const uint64_t counts[MT__COUNT])
{
    put(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int t = 0; t < MT__COUNT; t++)
        put(b, "%s{type=\"%s\"} %llu\n", name, msg_type_name((msg_type_t)t), (unsigned long long)counts[t]);
}

static void series_line(buf_t *b, const char *name, const metric_series_t *s, const char *extra,
                        const char *value)
{
    put(b, "%s{service=\"%s\",action=\"", name, s->key);
    put_label(b, s->key + strlen(s->key) + 1);
    put(b, "\"%s} %s\n", extra, value);
}

char *metrics_prometheus(const metrics_t *m, const stats_t *st, double uptime_s,
                         size_t peers, size_t services, size_t inflight)
{
    buf_t b = {0};
    put(&b, "# HELP smartshop_uptime_seconds Time since the broker started.\n"
            "# TYPE smartshop_uptime_seconds gauge\nsmartshop_uptime_seconds %.3f\n", uptime_s);
    put(&b, "# HELP smartshop_peers Connections known (remote and Lua).\n"
            "# TYPE smartshop_peers gauge\nsmartshop_peers %zu\n", peers);
    put(&b, "# HELP smartshop_services Registered service names.\n"
            "# TYPE smartshop_services gauge\nsmartshop_services %zu\n", services);
    put(&b, "# HELP smartshop_inflight_requests Requests handed out and not yet answered.\n"
            "# TYPE smartshop_inflight_requests gauge\nsmartshop_inflight_requests %zu\n", inflight);
    by_type(&b, "smartshop_messages_in_total", "Messages received, by type.", st->in);
    by_type(&b, "smartshop_messages_out_total", "Messages sent, by type.", st->out);
    put(&b, "# HELP smartshop_errors_total Error replies the broker sent, by code.\n"
            "# TYPE smartshop_errors_total counter\n");
    for (int c = 1; c < ERR__COUNT; c++)
        put(&b, "smartshop_errors_total{code=\"%s\"} %llu\n", bus_err_name((bus_err_t)c),
            (unsigned long long)st->errors[c]);
    put(&b, "# HELP smartshop_requests_total Requests routed, by service and action.\n"
            "# TYPE smartshop_requests_total counter\n");
    char value[64];
    for (const metric_series_t *s = m->series; s; s = s->hh.next) {
        snprintf(value, sizeof value, "%llu", (unsigned long long)s->requests);
        series_line(&b, "smartshop_requests_total", s, "", value);
    }
    put(&b, "# HELP smartshop_request_failures_total Requests that ended in an error "
            "(timeout, service_gone, ...) rather than an answer.\n"
            "# TYPE smartshop_request_failures_total counter\n");
    for (const metric_series_t *s = m->series; s; s = s->hh.next) {
        snprintf(value, sizeof value, "%llu", (unsigned long long)s->failed);
        series_line(&b, "smartshop_request_failures_total", s, "", value);
    }
    put(&b, "# HELP smartshop_request_duration_seconds From a request's arrival to its answer's.\n"
            "# TYPE smartshop_request_duration_seconds histogram\n");
    for (const metric_series_t *s = m->series; s; s = s->hh.next) {
        uint64_t cumulative = 0;
        for (int i = 0; i < METRICS_BUCKETS; i++) {
            char le[64];
            cumulative += s->buckets[i];
            if (i == METRICS_BUCKETS - 1)
                snprintf(le, sizeof le, ",le=\"+Inf\"");
            else
                snprintf(le, sizeof le, ",le=\"%g\"", bounds_s[i]);
            snprintf(value, sizeof value, "%llu", (unsigned long long)cumulative);
            series_line(&b, "smartshop_request_duration_seconds_bucket", s, le, value);
        }
        snprintf(value, sizeof value, "%.6f", s->latency_sum_s);
        series_line(&b, "smartshop_request_duration_seconds_sum", s, "", value);
        snprintf(value, sizeof value, "%llu", (unsigned long long)s->answered);
        series_line(&b, "smartshop_request_duration_seconds_count", s, "", value);
    }
    return b.text;
}
