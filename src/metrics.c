/* metrics: request series, latency histograms, JSON and Prometheus text.
 * See metrics.h. */
#include "metrics.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* upper bounds of the latency buckets, in seconds (the last is +Inf): up
 * to the longest deadline a request can have (10 s, the default 30 s
 * --request-timeout-ms, and TTL_MAX_DEFAULT_MS's 300 s), so that a slow
 * answer lands in a bucket of its own rather than in +Inf */
static const double bounds_s[METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10, 30, 300, 1e300,
};
_Static_assert(TTL_MAX_DEFAULT_MS <= 300 * 1000, "a deadline past the top latency bucket");

double metrics_bucket_bound_s(int i)
{
    return i >= 0 && i < METRICS_BUCKETS - 1 ? bounds_s[i] : 1e300;
}

static size_t make_key(char *key, const char *service, size_t slen, const char *action, size_t alen)
{
    memcpy(key, service, slen);
    key[slen] = '\0';
    memcpy(key + slen + 1, action, alen);
    key[slen + 1 + alen] = '\0';
    return slen + 1 + alen;
}

metrics_t *metrics_new(void)
{
    metrics_t *m = calloc(1, sizeof(metrics_t));
    if (m)
        m->overflow.key_len = make_key(m->overflow.key, METRICS_OVERFLOW_SERVICE,
                                       sizeof METRICS_OVERFLOW_SERVICE - 1, METRICS_OTHER_ACTION,
                                       sizeof METRICS_OTHER_ACTION - 1);
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

metric_series_t *metrics_series(metrics_t *m, registry_t *reg, const char (*names)[NAME_MAX_LEN + 1],
                                int name_count, const env_value_t *action, size_t max_series)
{
    /* the first name with an instance is where deliver_to_service goes */
    const char *service = NULL;
    size_t slen = 0;
    for (int i = 0; i < name_count && !service; i++) {
        slen = strlen(names[i]);
        if (registry_find_service(reg, names[i], slen))
            service = names[i];
    }
    if (!service)
        return NULL;
    const char *act = action->ptr;
    size_t alen = action->len;
    if (!env_is_plain_string(action) || alen > MSG_ID_MAX_LEN) {
        act = METRICS_OTHER_ACTION;
        alen = sizeof METRICS_OTHER_ACTION - 1;
    }
    char key[sizeof((metric_series_t *)0)->key];
    size_t len = make_key(key, service, slen, act, alen);
    metric_series_t *s = NULL;
    HASH_FIND(hh, m->series, key, len, s);
    if (s)
        return s;
    if (m->count >= max_series)
        return &m->overflow;
    s = calloc(1, sizeof *s);
    if (!s)
        return &m->overflow;
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

/* Every series in turn (s NULL: the first), then the overflow series if
 * it counted anything; NULL after the last. */
static const metric_series_t *series_next(const metrics_t *m, const metric_series_t *s)
{
    if (s == &m->overflow)
        return NULL;
    const metric_series_t *next = s ? s->hh.next : m->series;
    if (next)
        return next;
    return m->overflow.requests ? &m->overflow : NULL;
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
    m->topic_changes++;
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

cJSON *metrics_json(const metrics_t *m)
{
    cJSON *payload = cJSON_CreateObject();
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
    for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
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
                       size_t inflight, uint64_t key[7])
{
    uint64_t stats_sum = 0, series_sum = 0;
    const uint64_t *words = (const uint64_t *)st;
    for (size_t i = 0; i < sizeof *st / sizeof *words; i++)
        stats_sum += words[i];
    for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s))
        series_sum += s->requests + s->answered + s->failed;
    key[0] = stats_sum;
    key[1] = series_sum;
    key[2] = m->count;
    key[3] = peers;
    key[4] = services;
    key[5] = inflight;
    key[6] = m->topic_changes;
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

static void render_series(buf_t *b, const metrics_t *m)
{
    /* the label text of a series, once per series for its 16 lines */
    buf_t labels = {0};
    static const char *le[METRICS_BUCKETS] = {
        ",le=\"0.0001\"", ",le=\"0.00025\"", ",le=\"0.0005\"", ",le=\"0.001\"",
        ",le=\"0.0025\"", ",le=\"0.005\"", ",le=\"0.01\"", ",le=\"0.025\"",
        ",le=\"0.1\"", ",le=\"0.5\"", ",le=\"2.5\"", ",le=\"10\"", ",le=\"30\"",
        ",le=\"300\"", ",le=\"+Inf\"",
    };
    static const char *const sections[3][2] = {
        {"smartshop_requests_total", "# HELP smartshop_requests_total Requests routed, by service "
                                     "and action.\n# TYPE smartshop_requests_total counter\n"},
        {"smartshop_request_failures_total",
         "# HELP smartshop_request_failures_total Requests that ended in an error (timeout, "
         "service_gone, ...) rather than an answer.\n"
         "# TYPE smartshop_request_failures_total counter\n"},
        {"smartshop_request_duration_seconds",
         "# HELP smartshop_request_duration_seconds From a request's arrival to its answer's.\n"
         "# TYPE smartshop_request_duration_seconds histogram\n"},
    };
    for (int section = 0; section < 3; section++) {
        put(b, sections[section][1]);
        for (const metric_series_t *s = series_next(m, NULL); s; s = series_next(m, s)) {
            labels.len = 0;
            put(&labels, "{service=\"");
            put_label_value(&labels, s->key);
            put(&labels, "\",action=\"");
            put_label_value(&labels, s->key + strlen(s->key) + 1);
            put(&labels, "\"");
            if (labels.failed) {
                b->failed = true;
                break;
            }
            if (section == 0) {
                put_sample(b, "smartshop_requests_total", labels.text, labels.len, "", s->requests);
            } else if (section == 1) {
                put_sample(b, "smartshop_request_failures_total", labels.text, labels.len, "",
                           s->failed);
            } else {
                uint64_t cumulative = 0;
                for (int i = 0; i < METRICS_BUCKETS; i++) {
                    cumulative += s->buckets[i];
                    put_sample(b, "smartshop_request_duration_seconds_bucket", labels.text,
                               labels.len, le[i], cumulative);
                }
                char sum[64];
                int n = snprintf(sum, sizeof sum, "} %.6f\n", s->latency_sum_s);
                put(b, "smartshop_request_duration_seconds_sum");
                put_bytes(b, labels.text, labels.len);
                put_bytes(b, sum, n > 0 ? (size_t)n : 0);
                put_sample(b, "smartshop_request_duration_seconds_count", labels.text, labels.len,
                           "", s->answered);
            }
        }
    }
    free(labels.text);
}

metrics_text_t *metrics_prometheus(metrics_t *m, const stats_t *st, size_t peers,
                                   size_t services, size_t inflight)
{
    uint64_t key[7];
    render_key(m, st, peers, services, inflight, key);
    if (m->cached && memcmp(key, m->cached_key, sizeof key) == 0) {
        m->cached->refs++;
        return m->cached;
    }
    /* room for the header, and ~1.7 KB a series */
    buf_t b = {0};
    reserve(&b, sizeof(metrics_text_t) + 4096 + (m->count + 1) * 1800);
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

void metrics_text_release(metrics_text_t **text_p)
{
    metrics_text_t *t = *text_p;
    if (t && --t->refs == 0)
        free(t);
    *text_p = NULL;
}
