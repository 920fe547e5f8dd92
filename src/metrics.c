/* metrics: request series, outcomes, latency histograms, JSON and
 * Prometheus text. See metrics.h. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* upper bounds of the latency buckets, in seconds (the last is +Inf):
 * up to the longest deadline a request may have (TTL_MS_MAX), so that a
 * slow answer is never reported faster than it was */
static const double bounds_s[METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
    5, 10, 30, 60, 120, 300, 1e300,
};
static const char *const le_labels[METRICS_BUCKETS] = {
    ",le=\"0.0001\"", ",le=\"0.00025\"", ",le=\"0.0005\"", ",le=\"0.001\"",
    ",le=\"0.0025\"", ",le=\"0.005\"", ",le=\"0.01\"", ",le=\"0.025\"",
    ",le=\"0.1\"", ",le=\"0.5\"", ",le=\"2.5\"", ",le=\"5\"", ",le=\"10\"", ",le=\"30\"",
    ",le=\"60\"", ",le=\"120\"", ",le=\"300\"", ",le=\"+Inf\"",
};
_Static_assert(TTL_MS_MAX <= 300000 && TTL_MAX_DEFAULT_MS <= 300000,
               "the top finite bucket covers the longest deadline");

static const char *const outcome_names[METRICS_OUTCOMES] = {"ok", "error", "timeout", "gone",
                                                            "refused"};

const char *metrics_outcome_name(metrics_outcome_t o)
{
    return o < METRICS_OUTCOMES ? outcome_names[o] : "?";
}

metrics_outcome_t metrics_outcome_of_code(bus_err_t code)
{
    switch (code) {
    case ERR_NONE:
        return METRICS_OK;
    case ERR_TIMEOUT:
        return METRICS_TIMEOUT;
    case ERR_SERVICE_GONE:
    case ERR_SHUTTING_DOWN:
        return METRICS_GONE;
    default:
        return METRICS_REFUSED;
    }
}

const double *metrics_bucket_bounds(void)
{
    return bounds_s;
}

static void set_key(metric_series_t *s, const char *service, size_t slen, const char *dst,
                    size_t dlen, const char *action, size_t alen)
{
    char *k = s->key;
    memcpy(k, service, slen);
    k[slen] = '\0';
    memcpy(k + slen + 1, dst, dlen);
    k[slen + 1 + dlen] = '\0';
    memcpy(k + slen + 1 + dlen + 1, action, alen);
    k[slen + 1 + dlen + 1 + alen] = '\0';
    s->key_len = slen + 1 + dlen + 1 + alen;
    s->dst = k + slen + 1;
    s->action = k + slen + 1 + dlen + 1;
}

#define LIT(s) s, sizeof s - 1

metrics_t *metrics_new(void)
{
    metrics_t *m = calloc(1, sizeof(metrics_t));
    if (!m)
        return NULL;
    set_key(&m->overflow, LIT(METRICS_OVERFLOW_SERVICE), LIT(METRICS_OTHER_ACTION),
            LIT(METRICS_OTHER_ACTION));
    set_key(&m->unrouted, LIT(METRICS_UNROUTED_SERVICE), LIT(METRICS_OTHER_ACTION),
            LIT(METRICS_OTHER_ACTION));
    return m;
}

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
    metrics_text_release(&m->cached);
    free(m);
    *self_p = NULL;
}

metrics_t *metrics_copy(const metrics_t *m)
{
    metrics_t *c = malloc(sizeof *c);
    metric_series_t *all = m->count ? malloc(m->count * sizeof *all) : NULL;
    if (!c || (m->count && !all)) {
        free(c);
        free(all);
        return NULL;
    }
    *c = *m;
    c->cached = NULL;
    c->last_found = NULL;          /* a copy is never counted into */
    memset(c->cached_key, 0, sizeof c->cached_key);
    /* one block, linked as series_next walks them (by hh.next only);
     * dst and action point into each copy's own key */
    size_t i = 0;
    for (const metric_series_t *s = m->series; s; s = s->hh.next, i++) {
        all[i] = *s;
        memset(&all[i].hh, 0, sizeof all[i].hh);
        all[i].dst = all[i].key + (s->dst - s->key);
        all[i].action = all[i].key + (s->action - s->key);
        if (i > 0)
            all[i - 1].hh.next = &all[i];
    }
    c->series = all;
    c->count = i;
    metric_series_t *fixed[2] = {&c->overflow, &c->unrouted};
    const metric_series_t *from[2] = {&m->overflow, &m->unrouted};
    for (int k = 0; k < 2; k++) {
        memset(&fixed[k]->hh, 0, sizeof fixed[k]->hh);
        fixed[k]->dst = fixed[k]->key + (from[k]->dst - from[k]->key);
        fixed[k]->action = fixed[k]->key + (from[k]->action - from[k]->key);
    }
    return c;
}

void metrics_copy_free(metrics_t **copy_p)
{
    metrics_t *c = *copy_p;
    if (!c)
        return;
    free(c->series);            /* the one block */
    metrics_text_release(&c->cached);
    free(c);
    *copy_p = NULL;
}

/* A label-safe copy of a field: the field itself when it is a plain
 * string of at most `max` bytes, else "(other)". */
static const char *label_of(const env_value_t *v, size_t max, size_t *len)
{
    if (v && env_is_plain_string(v) && v->len <= max && v->len > 0) {
        *len = v->len;
        return v->ptr;
    }
    *len = sizeof METRICS_OTHER_ACTION - 1;
    return METRICS_OTHER_ACTION;
}

metric_series_t *metrics_series_of(metrics_t *m, const char *service, size_t slen,
                                   const env_value_t *dst, const env_value_t *action,
                                   size_t max_series)
{
    if (!service)
        return &m->unrouted;
    size_t dlen, alen;
    const char *d = label_of(dst, NAME_MAX_LEN, &dlen);
    const char *act = label_of(action, MSG_ID_MAX_LEN, &alen);
    char key[sizeof((metric_series_t *)0)->key];
    size_t len = slen + 1 + dlen + 1 + alen;
    memcpy(key, service, slen);
    key[slen] = '\0';
    memcpy(key + slen + 1, d, dlen);
    key[slen + 1 + dlen] = '\0';
    memcpy(key + slen + 1 + dlen + 1, act, alen);
    /* one compare instead of a keyed hash when this request is of the last
     * one's series, as a steady stream's are */
    metric_series_t *last = m->last_found;
    if (last && last->key_len == len && memcmp(last->key, key, len) == 0)
        return last;
    metric_series_t *s = NULL;
    HASH_FIND(hh, m->series, key, len, s);
    if (s)
        return m->last_found = s;
    if (m->count >= max_series)
        return &m->overflow;
    s = calloc(1, sizeof *s);
    if (!s)
        return &m->overflow;
    set_key(s, service, slen, d, dlen, act, alen);
    HASH_ADD(hh, m->series, key[0], len, s);
    m->count++;
    return m->last_found = s;
}

static void count_answer(metric_series_t *s, uint64_t latency_us)
{
    double secs = (double)latency_us / 1e6;
    s->latency_sum_s += secs;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (secs <= bounds_s[i]) {
            s->buckets[i]++;
            break;
        }
    }
}

void metrics_handed_over(metrics_t *m, metric_series_t *s)
{
    if (!s)
        return;
    s->requests++;
    m->changes++;
}

/* Whether a code is fit to be a label: name characters only. */
static bool code_is_plain(const char *code, size_t len)
{
    if (len == 0 || len > METRICS_CODE_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = code[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-' || c == ':'))
            return false;
    }
    return true;
}

static void count_code(metric_series_t *s, const char *code, size_t len)
{
    metric_code_t *other = &s->codes[METRICS_CODES_PER_SERIES];
    if (!code_is_plain(code, len)) {
        other->count++;
        return;
    }
    for (int i = 0; i < METRICS_CODES_PER_SERIES; i++) {
        metric_code_t *c = &s->codes[i];
        if (!c->count && !c->code[0]) {
            memcpy(c->code, code, len);
            c->code[len] = '\0';
        }
        if (strlen(c->code) == len && memcmp(c->code, code, len) == 0) {
            c->count++;
            return;
        }
    }
    other->count++;
}

/* The protocol's code of this text, or ERR_NONE for a code of the
 * service's own. */
static bus_err_t known_code(const char *code, size_t len)
{
    for (int c = 1; c < ERR__COUNT; c++) {
        const char *name = bus_err_name((bus_err_t)c);
        if (strlen(name) == len && memcmp(name, code, len) == 0)
            return (bus_err_t)c;
    }
    return ERR_NONE;
}

void metrics_outcome(metrics_t *m, metric_series_t *s, metrics_outcome_t outcome,
                     const char *code, size_t code_len, uint64_t latency_us)
{
    if (!s || outcome >= METRICS_OUTCOMES)
        return;
    m->changes++;
    s->outcomes[outcome]++;
    if (outcome == METRICS_REFUSED)
        s->requests++;                 /* never handed over: counted here */
    if (outcome != METRICS_OK)
        count_code(s, code ? code : "", code ? code_len : 0);
    if (outcome == METRICS_ERROR)
        m->service_errors[code ? known_code(code, code_len) : ERR_NONE]++;
    if (outcome == METRICS_OK || outcome == METRICS_ERROR)
        count_answer(s, latency_us);
}

/* --- views --- */

static void view_of(const metric_series_t *s, metrics_view_t *v)
{
    v->service = s->key;
    v->dst = s->dst;
    v->action = s->action;
    v->requests = s->requests;
    v->answered = s->outcomes[METRICS_OK] + s->outcomes[METRICS_ERROR];
    v->failed = 0;
    for (int o = METRICS_ERROR; o < METRICS_OUTCOMES; o++)
        v->failed += s->outcomes[o];
    v->outcomes = s->outcomes;
    v->codes = s->codes;
    v->buckets = s->buckets;
    v->latency_sum_s = s->latency_sum_s;
}

/* Every series in turn (s NULL: the first), then the unrouted and the
 * overflow series if they counted anything; NULL after the last. */
static const metric_series_t *series_next(const metrics_t *m, const metric_series_t *s)
{
    if (s == &m->overflow)
        return NULL;
    if (s != &m->unrouted) {
        const metric_series_t *next = s ? s->hh.next : m->series;
        if (next)
            return next;
        if (m->unrouted.requests)
            return &m->unrouted;
    }
    return m->overflow.requests ? &m->overflow : NULL;
}

void metrics_each(const metrics_t *m, void (*fn)(const metrics_view_t *v, void *ctx), void *ctx)
{
    metrics_view_t v;
    for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
        view_of(s, &v);
        fn(&v, ctx);
    }
}

void metrics_totals(const metrics_t *m, metrics_totals_t *out)
{
    memset(out, 0, sizeof *out);
    metrics_view_t v;
    for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
        view_of(s, &v);
        out->requests += v.requests;
        out->answered += v.answered;
        out->failed += v.failed;
        for (int o = 0; o < METRICS_OUTCOMES; o++)
            out->outcomes[o] += v.outcomes[o];
    }
}

double metrics_quantile_ms(const metrics_view_t *v, double q)
{
    if (!v->answered)
        return 0;
    uint64_t want = (uint64_t)(q * (double)v->answered + 0.999999), seen = 0;
    for (int i = 0; i < METRICS_BUCKETS - 1; i++) {
        seen += v->buckets[i];
        if (seen >= want)
            return bounds_s[i] * 1000;
    }
    /* past the top finite bound (the longest deadline): only lateness of
     * the event loop gets there */
    return bounds_s[METRICS_BUCKETS - 2] * 1000;
}

void metrics_topic(metrics_t *m, const char *topic, size_t len, size_t deliveries)
{
    size_t n = 0;
    while (n < len && topic[n] != '.')
        n++;
    metric_topic_t *t = &m->topics[METRICS_TOPIC_PREFIXES];      /* "(other)" */
    for (int i = 0; i < m->topic_count; i++) {
        if (strlen(m->topics[i].prefix) == n && memcmp(m->topics[i].prefix, topic, n) == 0) {
            t = &m->topics[i];
            break;
        }
    }
    if (t == &m->topics[METRICS_TOPIC_PREFIXES] && m->topic_count < METRICS_TOPIC_PREFIXES) {
        t = &m->topics[m->topic_count++];
        memcpy(t->prefix, topic, n);
        t->prefix[n] = '\0';
    }
    t->events++;
    t->deliveries += deliveries;
    t->unmatched += deliveries == 0;
    m->changes++;
}

/* The prefixes in use, then "(other)" if it counted anything. */
static const metric_topic_t *topic_next(const metrics_t *m, const metric_topic_t *t)
{
    const metric_topic_t *other = &m->topics[METRICS_TOPIC_PREFIXES];
    if (t == other)
        return NULL;
    t = t ? t + 1 : m->topics;
    if (t < m->topics + m->topic_count)
        return t;
    return other->events ? other : NULL;
}

/* --- JSON --- */

static void add_outcomes(cJSON *obj, const uint64_t outcomes[METRICS_OUTCOMES])
{
    cJSON *o = cJSON_AddObjectToObject(obj, "outcomes");
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        cJSON_AddNumberToObject(o, outcome_names[i], (double)outcomes[i]);
}

static void series_json(const metrics_view_t *v, void *ctx)
{
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "service", v->service);
    cJSON_AddStringToObject(item, "dst", v->dst);
    cJSON_AddStringToObject(item, "action", v->action);
    cJSON_AddNumberToObject(item, "requests", (double)v->requests);
    cJSON_AddNumberToObject(item, "ok", (double)v->outcomes[METRICS_OK]);
    cJSON_AddNumberToObject(item, "failed", (double)v->failed);
    cJSON_AddNumberToObject(item, "answered", (double)v->answered);
    add_outcomes(item, v->outcomes);
    cJSON *codes = cJSON_AddObjectToObject(item, "errors");
    for (int i = 0; i <= METRICS_CODES_PER_SERIES; i++)
        if (v->codes[i].count)
            cJSON_AddNumberToObject(codes, v->codes[i].code[0] ? v->codes[i].code : METRICS_OTHER_ACTION,
                                    (double)v->codes[i].count);
    cJSON *lat = cJSON_AddObjectToObject(item, "latency_ms");
    cJSON_AddNumberToObject(lat, "p50_le", metrics_quantile_ms(v, 0.5));
    cJSON_AddNumberToObject(lat, "p99_le", metrics_quantile_ms(v, 0.99));
    cJSON_AddNumberToObject(lat, "mean", v->answered ? v->latency_sum_s * 1000 / (double)v->answered : 0);
    cJSON_AddItemToArray(ctx, item);
}

static void totals_json(const metrics_t *m, cJSON *parent, const char *key)
{
    metrics_totals_t t;
    metrics_totals(m, &t);
    cJSON *obj = cJSON_AddObjectToObject(parent, key);
    cJSON_AddNumberToObject(obj, "total", (double)t.requests);
    cJSON_AddNumberToObject(obj, "ok", (double)t.outcomes[METRICS_OK]);
    cJSON_AddNumberToObject(obj, "failed", (double)t.failed);
    for (int i = METRICS_ERROR; i < METRICS_OUTCOMES; i++)
        cJSON_AddNumberToObject(obj, outcome_names[i], (double)t.outcomes[i]);
}

void metrics_add_totals_json(const metrics_t *m, cJSON *payload)
{
    totals_json(m, payload, "requests");
    cJSON *errs = cJSON_AddObjectToObject(payload, "service_errors");
    for (int c = 0; c < ERR__COUNT; c++)
        if (m->service_errors[c])
            cJSON_AddNumberToObject(errs, c ? bus_err_name((bus_err_t)c) : METRICS_OTHER_ACTION,
                                    (double)m->service_errors[c]);
}

cJSON *metrics_json(const metrics_t *m)
{
    cJSON *payload = cJSON_CreateObject();
    totals_json(m, payload, "totals");
    cJSON *topics = cJSON_AddArrayToObject(payload, "topics");
    for (const metric_topic_t *t = topic_next(m, NULL); t; t = topic_next(m, t)) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "prefix", t->prefix[0] ? t->prefix : METRICS_OTHER_ACTION);
        cJSON_AddNumberToObject(item, "events", (double)t->events);
        cJSON_AddNumberToObject(item, "deliveries", (double)t->deliveries);
        cJSON_AddNumberToObject(item, "unmatched", (double)t->unmatched);
        cJSON_AddItemToArray(topics, item);
    }
    cJSON *list = cJSON_AddArrayToObject(payload, "series");
    metrics_each(m, series_json, list);
    return payload;
}


/* --- Prometheus text --- */

/* The text is built once per scrape that finds a counter changed, in one
 * buffer, with plain appends: no printf per line or per character (a
 * render of 1000 series is ~1.7 MB). */
typedef struct {
    char *text;
    size_t len, cap;
    bool failed;                /* out of memory: the text is incomplete */
} buf_t;

static bool reserve(buf_t *b, size_t more)
{
    if (b->failed)
        return false;
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *grown = realloc(b->text, cap);
    if (!grown) {
        b->failed = true;
        return false;
    }
    b->text = grown;
    b->cap = cap;
    return true;
}

static void put_bytes(buf_t *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->text + b->len, s, n);
    b->len += n;
}

static void put(buf_t *b, const char *s)
{
    put_bytes(b, s, strlen(s));
}

static void put_u64(buf_t *b, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (!reserve(b, (size_t)n))
        return;
    while (n)
        b->text[b->len++] = digits[--n];
}

/* A label value, escaped as the text format wants (\\, \", \n), in a
 * plain loop. */
static void put_label_value(buf_t *b, const char *value)
{
    for (const char *c = value; *c; c++) {
        if (!reserve(b, 2))
            return;
        if (*c == '\\' || *c == '"') {
            b->text[b->len++] = '\\';
            b->text[b->len++] = *c;
        } else if (*c == '\n') {
            b->text[b->len++] = '\\';
            b->text[b->len++] = 'n';
        } else {
            b->text[b->len++] = *c;
        }
    }
}

static void put_sample(buf_t *b, const char *name, const char *labels, size_t labels_len,
                       const char *extra, uint64_t value)
{
    put(b, name);
    put_bytes(b, labels, labels_len);
    put(b, extra);
    put(b, "} ");
    put_u64(b, value);
    put(b, "\n");
}

/* "# HELP name help" and "# TYPE name type" */
static void put_header(buf_t *b, const char *name, const char *help, const char *type)
{
    put(b, "# HELP ");
    put(b, name);
    put(b, " ");
    put(b, help);
    put(b, "\n# TYPE ");
    put(b, name);
    put(b, " ");
    put(b, type);
    put(b, "\n");
}

static void by_type(buf_t *b, const char *name, const char *help, const uint64_t counts[MT__COUNT])
{
    put_header(b, name, help, "counter");
    for (int t = 0; t < MT__COUNT; t++) {
        put(b, name);
        put(b, "{type=\"");
        put(b, msg_type_name((msg_type_t)t));
        put(b, "\"} ");
        put_u64(b, counts[t]);
        put(b, "\n");
    }
}

static void gauge(buf_t *b, const char *name, const char *help, uint64_t value)
{
    put_header(b, name, help, "gauge");
    put(b, name);
    put(b, " ");
    put_u64(b, value);
    put(b, "\n");
}

/* What the text shows, summed: every counter only grows, so a sum that
 * did not change means no counter did (gauges are compared one by one). */
_Static_assert(sizeof(stats_t) % sizeof(uint64_t) == 0, "stats_t holds only uint64_t counters");

static void render_key(const metrics_t *m, const stats_t *st, size_t peers, size_t services,
                       size_t inflight, uint64_t key[6])
{
    uint64_t stats_sum = 0, series_sum = m->changes;
    const uint64_t *words = (const uint64_t *)st;
    for (size_t i = 0; i < sizeof *st / sizeof *words; i++)
        stats_sum += words[i];
    for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
        series_sum += s->requests;
        for (int o = 0; o < METRICS_OUTCOMES; o++)
            series_sum += s->outcomes[o];
    }
    key[0] = stats_sum;
    key[1] = series_sum;
    key[2] = m->count;
    key[3] = peers;
    key[4] = services;
    key[5] = inflight;
}

static void render_topics(buf_t *b, const metrics_t *m)
{
    static const char *const names[3][2] = {
        {"smartshop_topic_events_total", "Topic events published, by the topic's first token."},
        {"smartshop_topic_deliveries_total", "Copies of topic events delivered to subscribers."},
        {"smartshop_topic_unmatched_total", "Topic events no subscription matched."},
    };
    for (int k = 0; k < 3; k++) {
        put_header(b, names[k][0], names[k][1], "counter");
        for (const metric_topic_t *t = topic_next(m, NULL); t; t = topic_next(m, t)) {
            put(b, names[k][0]);
            put(b, "{prefix=\"");
            put_label_value(b, t->prefix[0] ? t->prefix : METRICS_OTHER_ACTION);
            put(b, "\"} ");
            put_u64(b, k == 0 ? t->events : k == 1 ? t->deliveries : t->unmatched);
            put(b, "\n");
        }
    }
}

enum { SEC_REQUESTS, SEC_OUTCOMES, SEC_FAILURES, SEC_ERRORS, SEC_DURATION, SECTIONS };

static const char *const section_head[SECTIONS] = {
    "# HELP smartshop_requests_total Requests, by the service they were routed to, the dst "
    "the client wrote, and action.\n# TYPE smartshop_requests_total counter\n",
    "# HELP smartshop_request_outcomes_total How requests ended: ok, error (the service "
    "answered an error), timeout, gone (the instance left), refused (by the broker).\n"
    "# TYPE smartshop_request_outcomes_total counter\n",
    "# HELP smartshop_request_failures_total Requests that did not end in an ok answer (every "
    "outcome but ok).\n# TYPE smartshop_request_failures_total counter\n",
    "# HELP smartshop_request_errors_total Requests answered with an error or refused, by code "
    "(a few codes a series, the rest as (other)).\n# TYPE smartshop_request_errors_total counter\n",
    "# HELP smartshop_request_duration_seconds From a request's arrival to its answer's (ok or "
    "error), up to the longest deadline.\n"
    "# TYPE smartshop_request_duration_seconds histogram\n",
};

static void render_section(buf_t *b, int section, const metrics_view_t *v, const buf_t *labels)
{
    switch (section) {
    case SEC_REQUESTS:
        put_sample(b, "smartshop_requests_total", labels->text, labels->len, "", v->requests);
        break;
    case SEC_OUTCOMES:
        for (int o = 0; o < METRICS_OUTCOMES; o++) {
            put(b, "smartshop_request_outcomes_total");
            put_bytes(b, labels->text, labels->len);
            put(b, ",outcome=\"");
            put(b, outcome_names[o]);
            put(b, "\"} ");
            put_u64(b, v->outcomes[o]);
            put(b, "\n");
        }
        break;
    case SEC_FAILURES:
        put_sample(b, "smartshop_request_failures_total", labels->text, labels->len, "", v->failed);
        break;
    case SEC_ERRORS:
        for (int i = 0; i <= METRICS_CODES_PER_SERIES; i++) {
            if (!v->codes[i].count)
                continue;
            put(b, "smartshop_request_errors_total");
            put_bytes(b, labels->text, labels->len);
            put(b, ",code=\"");
            put_label_value(b, v->codes[i].code[0] ? v->codes[i].code : METRICS_OTHER_ACTION);
            put(b, "\"} ");
            put_u64(b, v->codes[i].count);
            put(b, "\n");
        }
        break;
    case SEC_DURATION: {
        uint64_t cumulative = 0;
        for (int i = 0; i < METRICS_BUCKETS; i++) {
            cumulative += v->buckets[i];
            put_sample(b, "smartshop_request_duration_seconds_bucket", labels->text, labels->len,
                       le_labels[i], cumulative);
        }
        char sum[64];
        int n = snprintf(sum, sizeof sum, "} %.6f\n", v->latency_sum_s);
        put(b, "smartshop_request_duration_seconds_sum");
        put_bytes(b, labels->text, labels->len);
        put_bytes(b, sum, n > 0 ? (size_t)n : 0);
        put_sample(b, "smartshop_request_duration_seconds_count", labels->text, labels->len, "",
                   v->answered);
        break;
    }
    }
}

static void render_series(buf_t *b, const metrics_t *m)
{
    /* the label text of a series, once per series for its lines */
    buf_t labels = {0};
    metrics_view_t v;
    for (int section = 0; section < SECTIONS; section++) {
        put(b, section_head[section]);
        for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
            view_of(s, &v);
            labels.len = 0;
            put(&labels, "{service=\"");
            put_label_value(&labels, v.service);
            put(&labels, "\",action=\"");
            put_label_value(&labels, v.action);
            put(&labels, "\",dst=\"");
            put_label_value(&labels, v.dst);
            put(&labels, "\"");
            if (labels.failed) {
                b->failed = true;
                break;
            }
            render_section(b, section, &v, &labels);
        }
    }
    free(labels.text);
}

metrics_text_t *metrics_prometheus(metrics_t *m, const stats_t *st, size_t peers,
                                   size_t services, size_t inflight)
{
    uint64_t key[6];
    render_key(m, st, peers, services, inflight, key);
    if (m->cached && memcmp(key, m->cached_key, sizeof key) == 0) {
        m->cached->refs++;
        return m->cached;
    }
    /* room for the header, and ~2.6 KB a series */
    buf_t b = {0};
    reserve(&b, sizeof(metrics_text_t) + 8192 + (m->count + 2) * 2600);
    b.len = sizeof(metrics_text_t);
    gauge(&b, "smartshop_peers", "Connections known (remote and Lua).", peers);
    gauge(&b, "smartshop_services", "Registered service names.", services);
    gauge(&b, "smartshop_inflight_requests", "Requests handed out and not yet answered.", inflight);
    by_type(&b, "smartshop_messages_in_total", "Messages received, by type.", st->in);
    by_type(&b, "smartshop_messages_out_total", "Messages sent, by type.", st->out);
    put(&b, "# HELP smartshop_errors_total Error replies the broker sent, by code.\n"
            "# TYPE smartshop_errors_total counter\n");
    for (int c = 1; c < ERR__COUNT; c++) {
        put(&b, "smartshop_errors_total{code=\"");
        put(&b, bus_err_name((bus_err_t)c));
        put(&b, "\"} ");
        put_u64(&b, st->errors[c]);
        put(&b, "\n");
    }
    put(&b, "# HELP smartshop_service_errors_total Error answers services sent to requesters, by "
            "code (codes of a service's own as (other)).\n"
            "# TYPE smartshop_service_errors_total counter\n");
    for (int c = 0; c < ERR__COUNT; c++) {
        if (c == ERR_REQUESTER_GONE)
            continue;
        put(&b, "smartshop_service_errors_total{code=\"");
        put(&b, c ? bus_err_name((bus_err_t)c) : METRICS_OTHER_ACTION);
        put(&b, "\"} ");
        put_u64(&b, m->service_errors[c]);
        put(&b, "\n");
    }
    render_series(&b, m);
    render_topics(&b, m);
    if (b.failed) {
        free(b.text);
        return NULL;
    }
    metrics_text_t *text = (metrics_text_t *)b.text;
    text->refs = 2;                 /* the cache's and the caller's */
    text->len = b.len - sizeof(metrics_text_t);
    metrics_text_release(&m->cached);
    m->cached = text;
    memcpy(m->cached_key, key, sizeof key);
    return text;
}

size_t metrics_uptime_text(char *out, size_t cap, double uptime_s)
{
    int n = snprintf(out, cap,
                     "# HELP smartshop_uptime_seconds Time since the broker started.\n"
                     "# TYPE smartshop_uptime_seconds gauge\nsmartshop_uptime_seconds %.3f\n",
                     uptime_s);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

size_t metrics_policy_cache_text(char *out, size_t cap, uint64_t hits, uint64_t misses)
{
    int n = snprintf(out, cap,
                     "# HELP smartshop_policy_cache_hits_total Hook calls answered by a kept "
                     "decision of a pure filter() or route(), without running Lua.\n"
                     "# TYPE smartshop_policy_cache_hits_total counter\n"
                     "smartshop_policy_cache_hits_total %llu\n"
                     "# HELP smartshop_policy_cache_misses_total Lookups of a kept decision that "
                     "found none (the hook ran).\n"
                     "# TYPE smartshop_policy_cache_misses_total counter\n"
                     "smartshop_policy_cache_misses_total %llu\n",
                     (unsigned long long)hits, (unsigned long long)misses);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

void metrics_text_release(metrics_text_t **text_p)
{
    metrics_text_t *t = *text_p;
    if (t && --t->refs == 0)
        free(t);
    *text_p = NULL;
}

size_t metrics_restart_text(char *out, size_t cap, bool policy_stale, bool policy_fallback,
                            size_t restored_waiting)
{
    int n = snprintf(out, cap,
                     "# HELP smartshop_policy_stale 1 while the policy running is not the file's "
                     "(the file did not load).\n"
                     "# TYPE smartshop_policy_stale gauge\nsmartshop_policy_stale %d\n"
                     "# HELP smartshop_policy_fallback 1 if the broker started on the last good "
                     "policy because the file did not load.\n"
                     "# TYPE smartshop_policy_fallback gauge\nsmartshop_policy_fallback %d\n"
                     "# HELP smartshop_restored_waiting Registrations restored at start whose "
                     "peer has not come back yet.\n"
                     "# TYPE smartshop_restored_waiting gauge\nsmartshop_restored_waiting %zu\n",
                     policy_stale, policy_fallback, restored_waiting);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
