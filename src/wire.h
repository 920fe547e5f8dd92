/* wire: frames on the broker's ROUTER socket (docs/protocol.md F1-F4).
 *
 * Reads one message as [identity, json] or [identity, "", json] and sends
 * to a peer in the shape it used. Knows nothing of JSON or routing. */
#ifndef SMARTSHOP_WIRE_H
#define SMARTSHOP_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include <zmq.h>

#include "registry.h"

typedef struct {
    zmq_msg_t id;       /* routing identity */
    zmq_msg_t data;     /* the JSON frame (not to be read if bad_frames) */
    bool delimiter;     /* the peer sent an empty delimiter first */
    bool bad_frames;    /* not one of the two accepted shapes (F3) */
    int fd;             /* descriptor it arrived on (ZMQ_SRCFD), -1 if none */
    bool injected;      /* made inside the broker (a Lua service, a replay), not read
                           from the wire: says nothing of the peer's frame shape */
} wire_msg_t;

/* Receives one whole message without blocking. Returns 0, or -1 with errno
 * (EAGAIN when nothing is waiting). On 0 the caller owns `m` and must
 * wire_msg_close() it. */
int wire_recv(void *socket, wire_msg_t *m);

void wire_msg_close(wire_msg_t *m);

/* Sends `data` to `to` in its shape; on success `data` is consumed (left
 * empty). Returns 0, or -1 with errno: EHOSTUNREACH (no such connection)
 * or EAGAIN (its queue is full). */
int wire_send(void *socket, const peer_t *to, zmq_msg_t *data);

/* The same, to the connection a received message `m` came on, in its
 * shape, without a peer record: for answering a connection the broker
 * keeps no record of (an identity over PEER_ID_MAX bytes, the peer limit). */
int wire_send_back(void *socket, wire_msg_t *m, zmq_msg_t *data);

#endif
