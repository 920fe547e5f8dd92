/* http_history: rates and latency per service over the last minutes, for
 * the dashboard's charts (/api/v1/history). Kept by the HTTP thread from
 * the snapshots' cumulative totals: a sample every HTTP_HISTORY_STEP_MS,
 * HTTP_HISTORY_POINTS of them; a point's rates and quantiles come from
 * the difference of two samples, so nothing is added on the message path.
 *
 * Bounded: at most HTTP_HISTORY_SERVICES services (the first seen; the
 * rest are listed in /api/v1/state without a history), each
 * HTTP_HISTORY_POINTS samples of METRICS_BUCKETS + 2 counters (~20 KB). */
#ifndef SMARTSHOP_HTTP_HISTORY_H
#define SMARTSHOP_HTTP_HISTORY_H

#include <stdint.h>

#include "http_snapshot.h"

#define HTTP_HISTORY_STEP_MS 2000
#define HTTP_HISTORY_POINTS 150      /* 5 minutes */
#define HTTP_HISTORY_SERVICES 64
#define HTTP_HISTORY_WINDOW_MS 60000 /* the summary's window: the last minute */

typedef struct http_history http_history_t;

http_history_t *http_history_new(void);
void http_history_free(http_history_t **self_p);

/* Takes a sample of the snapshot's totals if a step has passed since the
 * last one kept (else nothing). */
void http_history_add(http_history_t *h, const http_snapshot_t *s);

/* The JSON of /api/v1/history (malloc'd; free it), or NULL if out of
 * memory. For each service: the last minute's ok and failed rates and
 * p50/p99 latency, and each step's, oldest first. */
char *http_history_json(const http_history_t *h);

/* The latency below which fraction q of the counts in `buckets` fell, in
 * ms, interpolated within its bucket as Prometheus' histogram_quantile
 * does; -1 if there are no counts. */
double http_quantile_ms(const uint64_t buckets[METRICS_BUCKETS], double q);

#endif
