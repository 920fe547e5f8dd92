/* http_snapshot: what the HTTP thread serves, taken by the broker thread
 * once a second (HTTP_SNAPSHOT_MS) off the message path, and then never
 * changed: the HTTP thread only reads it, so no lock is held while a
 * client is served and no HTTP client can slow routing down.
 *
 * A snapshot holds the per-service totals the history is built from
 * (http_history.h) and whether the broker is ready, and, made only when a
 * request asked for them (HTTP_PART_*), a copy of the broker's counters
 * for the Prometheus text (rendered by the HTTP thread) and the JSON of /api/v1/state (services with their
 * instances, peers, dead letters, the policy in force, with --nats the bus
 * and the names other brokers hold); a part not asked
 * for is the previous snapshot's, shared. Snapshots and their texts are
 * reference counted with atomics: whichever thread lets go of the last
 * reference frees it. */
#ifndef SMARTSHOP_HTTP_SNAPSHOT_H
#define SMARTSHOP_HTTP_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "router.h"

#define HTTP_SNAPSHOT_MS 1000
/* Listed in /api/v1/state at most (the counts are always whole): a
 * snapshot's size, and the broker thread's time making it, stay bounded
 * whatever connects. */
#define HTTP_STATE_PEERS_MAX 256
#define HTTP_STATE_SERVICES_MAX 256     /* the busiest, by requests */
#define HTTP_STATE_INSTANCES_MAX 32
#define HTTP_STATE_REMOTE_MAX 256       /* other brokers' names (--nats), the first by name */
#define HTTP_STATE_DEAD_LETTERS 20
#define HTTP_STATE_POLICY_BYTES (64u << 10)

/* Immutable bytes shared by snapshots and the responses sending them. */
typedef struct http_blob {
    atomic_uint refs;
    size_t len;
    char text[];
} http_blob_t;

http_blob_t *http_blob_ref(http_blob_t *blob);
void http_blob_release(http_blob_t **blob_p);

/* One service's totals since the broker started, as routed: requests,
 * how they ended (ok: answered without an error; failed: every other end,
 * and each outcome of metrics.h), and the latency of the answered ones
 * (one count per bucket of metrics_bucket_bounds, not cumulative). */
typedef struct {
    char name[NAME_MAX_LEN + 1];
    uint32_t instances;
    uint64_t requests, ok, failed;
    uint64_t outcomes[METRICS_OUTCOMES];
    uint64_t buckets[METRICS_BUCKETS];
} http_service_totals_t;

/* What the Prometheus text is made from: a copy of the counters, taken by
 * the broker thread (metrics_copy: a memcpy a series), rendered by the
 * HTTP thread at the first scrape that reads it (`rendered`, the HTTP
 * thread's only), so that a rendering (3 to 10 ms for 1000 series)
 * never holds up routing; the copy is 944 bytes a series. Shared, reference counted, by the snapshots that did
 * not ask for a fresh one. */
typedef struct http_metrics_part {
    atomic_uint refs;
    metrics_t *copy;
    stats_t stats;
    size_t peers, services, inflight;
    http_blob_t *rendered;
} http_metrics_part_t;

typedef struct http_snapshot {
    atomic_uint refs;
    uint64_t taken_ms;          /* clock_ms() when it was taken */
    bool ready;                 /* what /readyz says, and why not */
    char not_ready[96];
    http_metrics_part_t *metrics;   /* the counters, for the Prometheus text (or NULL) */
    uint64_t metrics_covers;    /* the last ask (http.c) they were copied after (0: none) */
    http_blob_t *state;         /* the JSON of /api/v1/state (or NULL) */
    uint64_t state_covers;
    uint64_t taken_covers;      /* the last ask made before it was taken */
    bool policy_stale, policy_fallback; /* the restart gauges (metrics_restart_text) */
    uint64_t policy_cache_hits, policy_cache_misses; /* policy_counts' */
    size_t restored_waiting;
    size_t service_count;
    http_service_totals_t services[];   /* by name */
} http_snapshot_t;

/* The parts made only on request. */
#define HTTP_PART_METRICS 1u
#define HTTP_PART_STATE 2u

/* The broker thread's side: the parts made last, for the snapshots that
 * do not make them anew. */
typedef struct {
    http_metrics_part_t *metrics;   /* the last copy of the counters */
    uint64_t metrics_covers;
    http_blob_t *state;
    uint64_t state_covers;
} http_snapshot_maker_t;

/* A new snapshot of what the router holds, with one reference, or NULL
 * if out of memory; `parts` (HTTP_PART_*) are made anew. `covers`: the
 * number of the last ask for a fresh part made before this call (http.c),
 * which the parts made anew then cover. `stopping`: the grace period runs
 * (not ready). */
http_snapshot_t *http_snapshot_take(http_snapshot_maker_t *maker, const router_t *router,
                                    bool stopping, unsigned parts, uint64_t covers,
                                    uint64_t now_ms);

void http_snapshot_maker_clear(http_snapshot_maker_t *maker);

/* The HTTP thread's: the Prometheus text of the snapshot's counters, all
 * but the uptime and the HTTP server's own (a reference; NULL if it has
 * none, or out of memory), rendered at the first call. */
http_blob_t *http_snapshot_prometheus(http_snapshot_t *s);

http_snapshot_t *http_snapshot_ref(http_snapshot_t *s);
void http_snapshot_release(http_snapshot_t **s_p);

#endif
