/* router: the message path. For each message from a peer: read its
 * envelope, check who may send it, and deliver it, or answer the sender
 * with an error. Also settles requests whose deadline passed or whose
 * instance went away. Never blocks, never re-encodes a forwarded message.
 *
 * Owns the bus's state (router_t): the registry, the requests in flight,
 * the topic subscriptions, the dead letters, the metrics and the counters.
 * It knows no socket, no clock and nothing of the services it hosts: what
 * goes on the wire leaves through a transport, the time comes from a
 * clock, and messages for hosted Lua services and for dst "broker" go to
 * the handlers in router_hosts_t. broker.c gives it the ROUTER socket
 * and the services; tests/unit/test_router.c gives it recorders. Nothing
 * the router calls ever calls back into it except through this API. */
#ifndef SMARTSHOP_ROUTER_H
#define SMARTSHOP_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include <zmq.h>

#include "bus_hooks.h"
#include "config.h"
#include "envelope.h"
#include "errors.h"
#include "registry.h"
#include "stats.h"
#include "wire.h"

struct auth;
struct deadletters;
struct inflight_table;
struct metrics;
struct policy;
struct topics;

typedef struct router router_t;

/* How messages leave on the wire. send: to a remote peer; 0, or -1 with
 * errno EAGAIN (it cannot take more now) or EHOSTUNREACH (gone); on
 * success it consumes `data`. send_back: straight back on the identity a
 * message came with (a connection without a record); 0 or -1. */
typedef struct {
    void *ctx;
    int (*send)(void *ctx, peer_t *to, zmq_msg_t *data);
    int (*send_back)(void *ctx, wire_msg_t *m, zmq_msg_t *data);
} router_transport_t;

/* Monotonic microseconds (clock.h's clock_us in the broker). */
typedef uint64_t (*router_clock_t)(void);

/* The services the router hosts, above it. enqueue: a message for the
 * hosted Lua service `to` (a PEER_LUA peer), with its envelope if read;
 * the same contract as transport.send (consumes `data` on success; -1
 * with errno EAGAIN when its queue is full). broker_request: a request
 * for dst "broker" (protocol B1); it answers through router_send_made and
 * router_send_error. Either may be NULL: no such service. */
typedef struct {
    void *lua_ctx;
    int (*enqueue)(void *ctx, peer_t *to, zmq_msg_t *data, const envelope_t *env);
    void *broker_ctx;
    void (*broker_request)(void *ctx, peer_t *from, const envelope_t *env);
} router_hosts_t;

/* A router with its tables sized by `cfg` (kept: must outlive it), on
 * `transport` and `clock`; `auth` (NULL in plain mode) is not owned.
 * NULL if memory ran out. */
router_t *router_new(const config_t *cfg, struct auth *auth, router_transport_t transport,
                     router_clock_t clock);
/* Frees it and its tables; answers nothing (see router_fail_all). */
void router_free(router_t **self_p);

void router_set_hosts(router_t *r, router_hosts_t hosts);
/* The policy whose hooks apply (not owned; NULL: none). */
void router_set_policy(router_t *r, struct policy *policy);
/* From now on new requests are answered shutting_down (D5). */
void router_set_stopping(router_t *r);
/* By when (router clock, us) the broker will have exited: shutting_down
 * answers carry the wait as payload.retry_after_ms (D5). */
void router_set_stop_ends(router_t *r, uint64_t at_us);
/* Whether `peer` gets a copy of every event (broker actions watch, unwatch). */
void router_set_watching(router_t *r, peer_t *peer, bool watching);

/* What it holds, for the broker's service, the metrics and the loop. */
registry_t *router_registry(const router_t *r);
struct inflight_table *router_inflight(const router_t *r);
struct topics *router_topics(const router_t *r);
struct deadletters *router_dead(const router_t *r);
struct metrics *router_metrics(const router_t *r);
struct trace *router_trace(const router_t *r);
/* The router's clock, in milliseconds. */
uint64_t router_now_ms(const router_t *r);
struct policy *router_policy(const router_t *r);
struct auth *router_auth(const router_t *r);
const config_t *router_config(const router_t *r);
const stats_t *router_stats(const router_t *r);
size_t router_inflight_count(const router_t *r);
/* When the router was made, in clock_ms terms (uptime). */
uint64_t router_started_ms(const router_t *r);

/* A message received on the ROUTER socket is handled in two steps:
 * router_read, then router_handle_read. */

/* A message's envelope, read ahead of handling it. */
typedef struct {
    bool read;              /* false: bad frames or over the size limit, not read */
    bus_err_t err;          /* what envelope_parse said, when read */
    const char *why;
    envelope_t env;         /* points into the message's frame */
} router_read_t;

/* Reads a message's envelope; no side effects, so that a batch's messages
 * can all be read before any is handled (broker.c: the sends then come
 * close together, and libzmq's I/O thread takes them in one wake-up). */
void router_read(const router_t *r, const wire_msg_t *m, router_read_t *rd);

/* Handles a message read with router_read: who sent it, the rules, the
 * policy's say, and delivery or an error answer. */
void router_handle_read(router_t *r, wire_msg_t *m, router_read_t *rd);

/* Handles a message a hosted Lua service sends, exactly as if it had come
 * from a remote peer on the wire (same checks, same policy hooks). */
void router_inject(router_t *r, peer_t *from, const char *text, size_t len);

/* The same for a frame (consumed). */
void router_inject_frame(router_t *r, peer_t *from, zmq_msg_t *data);

/* The same for a message a hosted Lua service wrote with msg_writer, whose
 * envelope is already read (`env`, pointing into `data`): the same rules
 * from the sender check on. Consumes `data`. */
void router_inject_made(router_t *r, peer_t *from, zmq_msg_t *data, envelope_t *env);

/* Answers `timeout` for every request whose deadline is <= now. */
void router_expire(router_t *r, uint64_t now_ms);

/* A connection went away: its names are dropped, requests handed to it get
 * service_gone, answers to requests it sent will be dropped. Frees `peer`. */
void router_peer_gone(router_t *r, peer_t *peer);

/* The restart's grace period is over (--restore-grace-ms): every restored
 * registration whose connection has not been seen is settled. Plain mode:
 * one `restored` event to its identity; taken, the peer is back, else it
 * is dropped. Under CURVE it is dropped. Returns how many were dropped. */
size_t router_restored_expire(router_t *r);

/* Answers every request in flight with `code` (at shutdown). */
void router_fail_all(router_t *r, bus_err_t code, const char *why);

/* Sends a message the broker made to `to`, counting it as `type`. Returns
 * 0, or -1 if the peer could not take it. */
int router_send_made(router_t *r, peer_t *to, const char *text, size_t len, msg_type_t type);

/* Answers `to` with an error about `about` (may be NULL). */
void router_send_error(router_t *r, peer_t *to, const envelope_t *about,
                       bus_err_t code, const char *why);

/* --- across brokers (docs/protocol.md X1-X13; bus.c calls these) --- */

/* From now on names held nowhere here cross to the other brokers through
 * `hooks`. Returns 0, or -1 if memory ran out. */
int router_bus_start(router_t *r, bus_hooks_t hooks);
/* No more crossing; what is in flight across ends in timeout. */
void router_bus_stop(router_t *r);

/* A request from broker `origin` (its `seq`) for `name`, held here. */
void router_bus_request(router_t *r, const char *origin, uint64_t seq, const char *name,
                        const void *data, size_t len);
/* An event from broker `origin` for `name`. */
void router_bus_event(router_t *r, const char *origin, uint64_t seq, const char *name,
                      const void *data, size_t len);
/* A broadcast (or, with `topic`, a topic event) another broker let in. */
void router_bus_broadcast(router_t *r, const void *data, size_t len, bool topic);
/* What came back about this broker's request ('r') or event ('e') `seq`:
 * an answer's bytes, or `nobody` (no broker took it). */
void router_bus_reply(router_t *r, char kind, uint64_t seq, const char *msg_id, size_t id_len,
                      const void *data, size_t len, bool nobody);

/* An arrival that was none of ours (a bad subject), for stats. */
void router_bus_refused(router_t *r);
/* Whether the router has a bus; and its state (the bus's describe hook)
 * and what crossed (stats_t.bus) into `into`: stats' and /api/v1/state's
 * "bus". */
bool router_bus_active(const router_t *r);
void router_bus_describe(const router_t *r, struct cJSON *into);
/* The other brokers' names, as bus_hooks_t.remote writes them; 0 without a bus. */
size_t router_bus_remote(const router_t *r, char *out, size_t cap);
/* Each of them, as bus_hooks_t.each_remote calls fn; none without a bus. */
void router_bus_each_remote(const router_t *r, bus_remote_fn fn, void *arg);

/* A label a person can read for a peer, for logs: its identity if
 * printable, its number, first name and address, as one word
 * ("#12/inventory@127.0.0.1"). */
const char *peer_label(const peer_t *peer, char buf[2 * PEER_ID_MAX + 3]);

#endif
