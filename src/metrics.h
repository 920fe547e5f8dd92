/* metrics: per-request counters and latency histograms, and their
 * renderings: JSON for the broker service's metrics and stats actions,
 * Prometheus text for the --metrics endpoint, and read-only views for
 * whoever else shows them (the dashboard).
 *
 * A series is one (service, dst, action): `service` the registered name
 * the request was routed to (the policy's route() choice: a canary, an
 * alias's target), `dst` the name the client wrote, `action` the
 * request's. Each request ends in exactly one outcome (ok, an error
 * answer, timeout, gone, refused); error answers and refusals are also
 * counted by their code, a few codes a series.
 *
 * Bounded: a series exists only for a request whose route reached a
 * registered name, and at most `max_series` (--metrics-max-series) of
 * them; past that, requests count in one overflow series, service
 * "_other" (no registered name can start with '_'). Requests whose route
 * reached no registered name (no_such_service, and refusals before
 * routing to a name nobody holds) count in one series, service "_none".
 * So the totals stay honest and a peer sending random names, actions or
 * error codes cannot grow the broker or its scrapes. */
#ifndef SMARTSHOP_METRICS_H
#define SMARTSHOP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include "keyed_hash.h"

#include "envelope.h"
#include "errors.h"
#include "names.h"
#include "registry.h"
#include "stats.h"

/* latency buckets: 0.1 ms .. 300 s (TTL_MS_MAX, the longest a request may
 * wait), and +Inf */
#define METRICS_BUCKETS 18
#define METRICS_OVERFLOW_SERVICE "_other"
#define METRICS_UNROUTED_SERVICE "_none"
#define METRICS_OTHER_ACTION "(other)"
/* error codes counted by name in one series; the rest as "(other)" */
#define METRICS_CODES_PER_SERIES 4
#define METRICS_CODE_MAX_LEN 64

/* How a request ended. */
typedef enum {
    METRICS_OK = 0,         /* answered with a response */
    METRICS_ERROR,          /* answered with an error (the service's code) */
    METRICS_TIMEOUT,        /* no answer before its deadline */
    METRICS_GONE,           /* its instance went away, or the broker stopped */
    METRICS_REFUSED,        /* refused by the broker: no_such_service, denied, busy, ... */
    METRICS_OUTCOMES
} metrics_outcome_t;

/* "ok", "error", "timeout", "gone", "refused" */
const char *metrics_outcome_name(metrics_outcome_t o);

/* The outcome a broker error code stands for, for a request the broker
 * ended itself (timeout, service_gone and shutting_down, else refused). */
metrics_outcome_t metrics_outcome_of_code(bus_err_t code);

typedef struct {
    char code[METRICS_CODE_MAX_LEN + 1];      /* "" for the "(other)" slot */
    uint64_t count;
} metric_code_t;

typedef struct metric_series {
    /* "service\0dst\0action" */
    char key[2 * (NAME_MAX_LEN + 1) + MSG_ID_MAX_LEN + 1];
    size_t key_len;
    const char *dst, *action;              /* into key */
    uint64_t requests;                     /* handed over or refused */
    uint64_t outcomes[METRICS_OUTCOMES];
    metric_code_t codes[METRICS_CODES_PER_SERIES + 1]; /* the last: "(other)" */
    uint64_t buckets[METRICS_BUCKETS];     /* answers (ok or error) by latency, not cumulative */
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

typedef struct metrics {
    metric_topic_t topics[METRICS_TOPIC_PREFIXES + 1];   /* the last: "(other)" */
    int topic_count;               /* prefixes in use, not counting "(other)" */
    uint64_t changes;              /* bumped by every count, for the rendering's cache */
    metric_series_t *series;
    metric_series_t *last_found;   /* metrics_series_of's last answer: most requests repeat it */
    size_t count;                  /* in `series`; `overflow` and `unrouted` are not */
    metric_series_t overflow;      /* _other/(other)/(other): requests past the bound */
    metric_series_t unrouted;      /* _none/(other)/(other): routed to no registered name */
    uint64_t service_errors[ERR__COUNT]; /* error answers services sent, by code ([0]: others) */
    metrics_text_t *cached;        /* the last rendering, and what it showed */
    uint64_t cached_key[6];
} metrics_t;

metrics_t *metrics_new(void);
void metrics_free(metrics_t **self_p);

/* A copy of every count, for another thread to read or render (with
 * metrics_prometheus) while this one goes on counting: a few hundred
 * bytes a series, copied in one block. It can only be read, rendered and
 * freed (metrics_copy_free), never counted into. NULL if out of memory. */
metrics_t *metrics_copy(const metrics_t *m);
void metrics_copy_free(metrics_t **copy_p);

/* The series of a request addressed to `dst`, with its `action`, routed
 * to `service` (`slen` bytes: the first name of its route that is a
 * registered service, which the router has looked up already; NULL: none
 * is, the unrouted series). Created on first use; the overflow series
 * once `max_series` exist. Never NULL. */
metric_series_t *metrics_series_of(metrics_t *m, const char *service, size_t slen,
                                   const env_value_t *dst, const env_value_t *action,
                                   size_t max_series);

/* A request of that series was handed to an instance. */
void metrics_handed_over(metrics_t *m, metric_series_t *s);

/* A request of that series ended with `outcome`. `refused` requests were
 * never handed over and count as requests here. `code` (len bytes, NULL
 * for ok) is the error's code; `latency_us` counts for answers only. */
void metrics_outcome(metrics_t *m, metric_series_t *s, metrics_outcome_t outcome,
                     const char *code, size_t code_len, uint64_t latency_us);

/* A topic event was published on `topic` and reached `deliveries`
 * connections (0: no subscription matched). */
void metrics_topic(metrics_t *m, const char *topic, size_t len, size_t deliveries);

/* --- reading them (every view is valid until the next count) --- */

/* The latency buckets' upper bounds in seconds; the last is +Inf. */
const double *metrics_bucket_bounds(void);

typedef struct {
    const char *service, *dst, *action;
    uint64_t requests, answered, failed;   /* answered: ok + error; failed: all but ok */
    const uint64_t *outcomes;              /* METRICS_OUTCOMES counts */
    const metric_code_t *codes;            /* METRICS_CODES_PER_SERIES + 1 */
    const uint64_t *buckets;               /* METRICS_BUCKETS, not cumulative */
    double latency_sum_s;
} metrics_view_t;

/* Calls fn for every series (then the unrouted and overflow series, if
 * they counted anything). */
void metrics_each(const metrics_t *m, void (*fn)(const metrics_view_t *v, void *ctx), void *ctx);

/* Every series summed. */
typedef struct {
    uint64_t requests, answered, failed;
    uint64_t outcomes[METRICS_OUTCOMES];
} metrics_totals_t;
void metrics_totals(const metrics_t *m, metrics_totals_t *out);

/* The latency below which `q` of the view's answers fell: the upper bound
 * of its bucket, in ms (0 with no answers). */
double metrics_quantile_ms(const metrics_view_t *v, double q);

/* {"series": [{service, dst, action, requests, answered, ok, failed,
 *  outcomes: {...}, errors: {code: n}, latency_ms: {p50_le, p99_le, mean}}],
 *  "totals": {...}, "topics": [...]} */
cJSON *metrics_json(const metrics_t *m);

/* Adds "requests": {total, ok, failed, and each outcome} and
 * "service_errors": {code: n} to a stats payload. */
void metrics_add_totals_json(const metrics_t *m, cJSON *payload);

/* The Prometheus text of the counters in `stats` and `m`, all but the
 * uptime (which changes every millisecond: see metrics_uptime_text).
 * Rendered again only if a counter changed since the last call; otherwise
 * the same text. Returns a reference (metrics_text_release it), or NULL if
 * out of memory. */
metrics_text_t *metrics_prometheus(metrics_t *m, const stats_t *stats, size_t peers,
                                   size_t services, size_t inflight);

/* The uptime gauge's lines, into out[cap]; returns their length. */
size_t metrics_uptime_text(char *out, size_t cap, double uptime_s);

/* The restart gauges' lines (docs/operations.md): whether the running
 * policy is stale or a start-up fallback, and how many restored
 * registrations still wait for their peer. Returns their length. */
size_t metrics_restart_text(char *out, size_t cap, bool policy_stale, bool policy_fallback,
                            size_t restored_waiting);

/* The policy decision cache's counters (docs/policies.md, "The decision
 * cache"): lookups that found a kept decision, and those that did not.
 * Returns their length. */
size_t metrics_policy_cache_text(char *out, size_t cap, uint64_t hits, uint64_t misses);

void metrics_text_release(metrics_text_t **text_p);


#endif
