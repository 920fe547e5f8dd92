/* metrics: per-service, per-action request counters and latency
 * histograms, and their renderings: JSON for the broker service's metrics
 * action, Prometheus text for the --metrics endpoint.
 *
 * Bounded: at most METRICS_MAX_SERIES service/action pairs; the rest are
 * counted under action "(other)", so that a peer sending random actions
 * cannot grow the broker. */
#ifndef SMARTSHOP_METRICS_H
#define SMARTSHOP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include "keyed_hash.h"

#include "envelope.h"
#include "errors.h"
#include "names.h"
#include "stats.h"

#define METRICS_MAX_SERIES 1000
#define METRICS_BUCKETS 12

typedef struct metric_series {
    char key[NAME_MAX_LEN + 1 + MSG_ID_MAX_LEN + 1];   /* "service\0action" */
    size_t key_len;
    uint64_t requests, answered, failed;
    uint64_t buckets[METRICS_BUCKETS];     /* latency <= bucket bounds, cumulative at render */
    double latency_sum_s;
    UT_hash_handle hh;
} metric_series_t;

typedef struct {
    metric_series_t *series;
    size_t count;
} metrics_t;

metrics_t *metrics_new(void);
void metrics_free(metrics_t **self_p);

/* The series of a request's dst and action (created on first use). */
metric_series_t *metrics_series(metrics_t *m, const envelope_t *env);

/* A request of that series ended: answered (with latency) or failed. */
void metrics_answered(metric_series_t *s, uint64_t latency_us);
void metrics_failed(metric_series_t *s);

/* {"series": [{service, action, requests, answered, failed, latency_ms: {p50, p99, buckets}}]} */
cJSON *metrics_json(const metrics_t *m);

/* The Prometheus text exposition of the counters in `stats` and `m`.
 * Returns a malloc'd text. */
char *metrics_prometheus(const metrics_t *m, const stats_t *stats, double uptime_s,
                         size_t peers, size_t services, size_t inflight);

#endif
