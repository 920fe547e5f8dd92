/* router: the message path. For each message from a peer: read its
 * envelope, check who may send it, and deliver it, or answer the sender
 * with an error. Also settles requests whose deadline passed or whose
 * instance went away. Never blocks, never re-encodes a forwarded message. */
#ifndef SMARTSHOP_ROUTER_H
#define SMARTSHOP_ROUTER_H

#include "broker.h"
#include "wire.h"

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
void router_read(broker_t *b, const wire_msg_t *m, router_read_t *r);

/* Handles a message read with router_read: who sent it, the rules, the
 * policy's say, and delivery or an error answer. */
void router_handle_read(broker_t *b, wire_msg_t *m, router_read_t *r);

/* Handles a message a hosted Lua service sends, exactly as if it had come
 * from a remote peer on the wire (same checks, same policy hooks). */
void router_inject(broker_t *b, peer_t *from, const char *text, size_t len);

/* The same for a frame (consumed). */
void router_inject_frame(broker_t *b, peer_t *from, zmq_msg_t *data);

/* The same for a message a hosted Lua service wrote with msg_writer, whose
 * envelope is already read (`env`, pointing into `data`): the same rules
 * from the sender check on. Consumes `data`. */
void router_inject_made(broker_t *b, peer_t *from, zmq_msg_t *data, envelope_t *env);

/* Answers `timeout` for every request whose deadline is <= now. */
void router_expire(broker_t *b, uint64_t now_ms);

/* A connection went away: its names are dropped, requests handed to it get
 * service_gone, answers to requests it sent will be dropped. Frees `peer`. */
void router_peer_gone(broker_t *b, peer_t *peer);

/* Answers every request in flight with `code` (at shutdown). */
void router_fail_all(broker_t *b, bus_err_t code, const char *why);

/* Sends a message the broker made to `to`, counting it as `type`. Returns
 * 0, or -1 if the peer could not take it. */
int router_send_made(broker_t *b, peer_t *to, const char *text, size_t len, msg_type_t type);

/* Answers `to` with an error about `about` (may be NULL). */
void router_send_error(broker_t *b, peer_t *to, const envelope_t *about,
                       bus_err_t code, const char *why);

/* --- across brokers (docs/protocol.md X1-X12; bus.c calls these) --- */

/* From now on names held nowhere here cross to the other brokers through
 * `hooks`. Returns 0, or -1 if memory ran out. */
int router_bus_start(broker_t *b, bus_hooks_t hooks);
/* No more crossing; what is in flight across ends in timeout. */
void router_bus_stop(broker_t *b);

/* A request from broker `origin` (its `seq`) for `name`, held here. */
void router_bus_request(broker_t *b, const char *origin, uint64_t seq, const char *name,
                        const void *data, size_t len);
/* An event from broker `origin` for `name`. */
void router_bus_event(broker_t *b, const char *origin, uint64_t seq, const char *name,
                      const void *data, size_t len);
/* A broadcast (or, with `topic`, a topic event) another broker let in. */
void router_bus_broadcast(broker_t *b, const void *data, size_t len, bool topic);
/* What came back about this broker's request ('r') or event ('e') `seq`:
 * an answer's bytes, or `nobody` (no broker took it). */
void router_bus_reply(broker_t *b, char kind, uint64_t seq, const char *msg_id, size_t id_len,
                      const void *data, size_t len, bool nobody);

/* A printable label for a peer (its identity, or hex), for logs. */
const char *peer_label(const peer_t *peer, char buf[2 * PEER_ID_MAX + 3]);

#endif
