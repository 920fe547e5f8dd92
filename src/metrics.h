/* metrics: per-service, per-action request counters and latency
 * histograms, and their renderings: JSON for the broker service's metrics
 * action, Prometheus text for the --metrics endpoint.
 *
 * Bounded: a series exists only for a name registered when the request was
 * routed (never for a refused or unroutable dst), and at most `max_series`
 * (--metrics-max-series) of them; past that, requests count in one overflow
 * series, service "_other" (no registered name can start with '_'), so
 * that the totals stay honest and a peer sending random names or actions
 * cannot grow the broker or its scrapes. */
#ifndef SMARTSHOP_METRICS_H
#define SMARTSHOP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include "keyed_hash.h"

#include "envelope.h"
#include "errors.h"
#include "names.h"
#include "registry.h"
#include "stats.h"

#define METRICS_BUCKETS 15
#define METRICS_OVERFLOW_SERVICE "_other"
#define METRICS_OTHER_ACTION "(other)"

typedef struct metric_series {
    char key[NAME_MAX_LEN + 1 + MSG_ID_MAX_LEN + 1];   /* "service\0action" */
    size_t key_len;
    uint64_t requests, answered, failed;
    uint64_t buckets[METRICS_BUCKETS];     /* latency <= bucket bounds, cumulative at render */
    double latency_sum_s;
    UT_hash_handle hh;
} metric_series_t;

/* One rendering of the Prometheus text, shared by the connections sending
 * it (reference counted: a newer one may replace it meanwhile). */
typedef struct metrics_text {
    unsigned refs;
    size_t len;
    char text[];
} metrics_text_t;

/* Topic events by the topic's first token (docs/protocol.md section 8a):
 * at most METRICS_TOPIC_PREFIXES prefixes, the rest as "(other)", so that
 * publishers choosing topics cannot grow the broker or its scrapes (the
 * label "(other)" cannot be a token). */
#define METRICS_TOPIC_PREFIXES 64
typedef struct {
    char prefix[TOPIC_MAX_LEN + 1];
    uint64_t events, deliveries, unmatched;
} metric_topic_t;

typedef struct {
    metric_topic_t topics[METRICS_TOPIC_PREFIXES + 1];   /* the last: "(other)" */
    int topic_count;               /* prefixes in use, not counting "(other)" */
    uint64_t topic_changes;        /* for the rendering's cache */
    metric_series_t *series;
    size_t count;                  /* in `series`; `overflow` is not one of them */
    metric_series_t overflow;      /* _other/(other): requests past the bound */
    metrics_text_t *cached;        /* the last rendering, and what it showed */
    uint64_t cached_key[7];
} metrics_t;

metrics_t *metrics_new(void);
void metrics_free(metrics_t **self_p);

/* The series of a request routed to the first of `names` that is a
 * registered service, and its `action` (created on first use; the overflow
 * series once `max_series` exist). NULL if none of the names is registered:
 * such a request is refused and counted in the error totals only. */
metric_series_t *metrics_series(metrics_t *m, registry_t *reg, const char (*names)[NAME_MAX_LEN + 1],
                                int name_count, const env_value_t *action, size_t max_series);

/* A request of that series ended: answered (with latency) or failed. */
void metrics_answered(metric_series_t *s, uint64_t latency_us);
void metrics_failed(metric_series_t *s);

/* A topic event was published on `topic` and reached `deliveries`
 * connections (0: no subscription matched). */
void metrics_topic(metrics_t *m, const char *topic, size_t len, size_t deliveries);

/* {"series": [{service, action, requests, answered, failed, latency_ms: {p50, p99, buckets}}]} */
cJSON *metrics_json(const metrics_t *m);

/* The Prometheus text of the counters in `stats` and `m`, all but the
 * uptime (which changes every millisecond: see metrics_uptime_text).
 * Rendered again only if a counter changed since the last call; otherwise
 * the same text. Returns a reference (metrics_text_release it), or NULL if
 * out of memory. */
metrics_text_t *metrics_prometheus(metrics_t *m, const stats_t *stats, size_t peers,
                                   size_t services, size_t inflight);

/* The uptime gauge's lines, into out[cap]; returns their length. */
size_t metrics_uptime_text(char *out, size_t cap, double uptime_s);

void metrics_text_release(metrics_text_t **text_p);

/* The upper bound of latency bucket i, in seconds (the last: +Inf). */
double metrics_bucket_bound_s(int i);

#endif
