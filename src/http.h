/* http: the --metrics HTTP endpoint on Debian's libmicrohttpd, in a thread
 * of its own: /metrics (Prometheus text), /healthz, /readyz, the JSON API
 * (/api/v1/state, /api/v1/history) and the dashboard (/, its assets
 * compiled in from web/). docs/operations.md, "HTTP endpoints and the
 * dashboard".
 *
 * The broker thread never waits for HTTP: it calls http_tick on every pass
 * of its loop (an atomic store) and, when it says so, http_publish, which
 * takes a snapshot of its state (http_snapshot.h) and swaps it in under a
 * lock it only tries (busy: the next pass swaps). The HTTP thread answers
 * from the newest snapshot only, so a slow or hostile HTTP client can
 * never stall routing; it runs at HTTP_THREAD_NICE below the loop.
 * A snapshot is due once a second (the service totals of the history,
 * readiness), and sooner when a request for /metrics or /api/v1/state
 * waits for its part made after it arrived (it is suspended until then,
 * at most HTTP_FRESH_WAIT_MS): what a scrape shows includes every message
 * the broker handled before it (requests are numbered and a part says
 * the last number it covers: a millisecond clock cannot tell, since one
 * millisecond holds a snapshot, an answer and the scrape sent next), and
 * the Prometheus text and the JSON are made only when someone asks.
 * Those extra snapshots come at most one per HTTP_FRESH_MIN_MS, whatever
 * the number of requests.
 *
 * libmicrohttpd runs in its external-epoll mode inside that thread, which
 * accepts the connections itself: up to --metrics-max-connections at once
 * (more get a 503 at once and are closed); a connection that completes no
 * request within --metrics-idle-timeout-ms of opening, or whose answer
 * makes no progress for that long, is closed; a request head over about
 * --metrics-max-request-bytes gets 431 (docs/security.md, "Metrics and
 * listings"). */
#ifndef SMARTSHOP_HTTP_H
#define SMARTSHOP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http_snapshot.h"

/* /healthz says 503 once the broker's loop has not turned for this long
 * (it turns at least once a second when idle). */
#define HTTP_HEALTH_STALL_MS 5000
/* Refused connections get their 503 and then this long to read it before
 * they are closed; at most HTTP_REFUSING_MAX of them wait at once (more
 * are closed at once). */
#define HTTP_REFUSE_LINGER_MS 1000
/* Out of descriptors, the HTTP thread stops accepting this long (rather
 * than spin on a listener that stays readable). */
#define HTTP_ACCEPT_PAUSE_MS 100
#define HTTP_REFUSING_MAX 64

#define HTTP_FRESH_MIN_MS 100
#define HTTP_FRESH_WAIT_MS 1000
/* The HTTP thread's nice value over the loop's: its work never takes the
 * CPU the event loop wants. */
#define HTTP_THREAD_NICE 10

typedef struct http_server http_server_t;

/* Binds cfg->metrics_endpoint ("tcp://HOST:PORT") and starts the HTTP
 * thread. The caller must have blocked the signals the broker handles (the
 * thread inherits the mask). Returns NULL with a one-line reason in err. */
http_server_t *http_start(const config_t *cfg, char *err, size_t errlen);

/* Every pass of the broker's loop: records that it turned; true when a
 * snapshot is due (then call http_publish). */
bool http_tick(http_server_t *h, uint64_t now_ms);

/* When the next snapshot is due (for the loop's poll timeout). */
uint64_t http_next_due(const http_server_t *h);

/* The descriptor the broker's loop polls: readable when the HTTP thread
 * wants a snapshot; http_woken reads it. */
int http_wake_fd(const http_server_t *h);
void http_woken(http_server_t *h);

/* Takes a snapshot of what `router` holds and hands it to the HTTP
 * thread. `stopping`: the grace period runs (/readyz says 503). */
void http_publish(http_server_t *h, const router_t *router, bool stopping, uint64_t now_ms);

/* Stops the thread, closes every connection and the socket. */
void http_stop(http_server_t **h_p);

#endif
