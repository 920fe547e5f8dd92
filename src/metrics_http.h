/* metrics_http: the --metrics endpoint: Prometheus text over plain HTTP,
 * served by a ZMQ_STREAM socket in the broker's own event loop (no thread,
 * no hand-written socket code). Answers a GET with the metrics, anything
 * else with an HTTP error, and closes the connection.
 *
 * Bounded (docs/security.md, "The metrics endpoint"): at most
 * --metrics-max-connections connections (more are answered 503 and
 * closed), --metrics-max-request-bytes of request each, closed after
 * --metrics-idle-timeout-ms without a complete request or without the
 * reader taking more of the answer. The answer goes out in pieces of
 * METRICS_HTTP_PIECE bytes, at most METRICS_HTTP_QUEUED of them queued to
 * a connection at once, from one rendering shared by every connection. */
#ifndef SMARTSHOP_METRICS_HTTP_H
#define SMARTSHOP_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_HTTP_PIECE (64u << 10)
#define METRICS_HTTP_QUEUED 4

#include "config.h"

struct router;

/* Binds the endpoint of cfg->metrics_endpoint, on `zmq_ctx`, to show what
 * `router` counts (both must outlive it). Returns 0, or -1 with err. */
int metrics_http_start(void *zmq_ctx, const config_t *cfg, struct router *router, char *err,
                       size_t errlen);

/* Its socket, for the event loop's poll (NULL when not started). */
void *metrics_http_socket(void);

/* Answers what waits on the socket (never blocks). */
void metrics_http_handle(void);

/* Closes the connections whose time ran out; the event loop calls it on
 * every pass (it costs a comparison when none is due). */
void metrics_http_expire(uint64_t now_ms);

/* Closes the socket (before the ZeroMQ context terminates). */
void metrics_http_stop(void);

#endif
