/* wire: the two frame shapes on the ROUTER socket. See wire.h. */
#include "wire.h"

#include <errno.h>
#include <string.h>

/* Whether another frame follows `msg` (zmq_msg_more: no socket call). */
static bool more_follows(zmq_msg_t *msg)
{
    return zmq_msg_more(msg) != 0;
}

/* Reads and drops what is left of a multipart message after `last`. */
static void drain(void *socket, zmq_msg_t *last)
{
    zmq_msg_t extra;
    zmq_msg_init(&extra);
    bool more = more_follows(last);
    while (more && zmq_msg_recv(&extra, socket, 0) >= 0)
        more = more_follows(&extra);
    zmq_msg_close(&extra);
}

int wire_recv(void *socket, wire_msg_t *m)
{
    zmq_msg_init(&m->id);
    zmq_msg_init(&m->data);
    m->delimiter = false;
    m->bad_frames = false;
    m->injected = false;
    m->fd = -1;
    if (zmq_msg_recv(&m->id, socket, ZMQ_DONTWAIT) < 0) {
        int saved = errno;
        wire_msg_close(m);
        errno = saved;
        return -1;
    }
    /* A ROUTER always delivers the identity and then at least one frame. */
    if (!more_follows(&m->id) || zmq_msg_recv(&m->data, socket, 0) < 0) {
        m->bad_frames = true;
        return 0;
    }
    m->fd = zmq_msg_get(&m->data, ZMQ_SRCFD);
    if (zmq_msg_size(&m->data) == 0 && more_follows(&m->data)) {
        m->delimiter = true;
        if (zmq_msg_recv(&m->data, socket, 0) < 0) {
            m->bad_frames = true;
            return 0;
        }
    }
    if (more_follows(&m->data)) {
        m->bad_frames = true;
        drain(socket, &m->data);
    } else if (zmq_msg_size(&m->data) == 0) {
        m->bad_frames = true; /* an empty frame carries no message */
    }
    return 0;
}

void wire_msg_close(wire_msg_t *m)
{
    zmq_msg_close(&m->id);
    zmq_msg_close(&m->data);
}

/* The identity frame and, for REQ-style peers, the delimiter. With
 * ZMQ_ROUTER_MANDATORY the identity frame is where an unknown or full peer
 * is refused; once it is accepted, the rest of the message goes through. */
static int send_head(void *socket, const peer_t *to)
{
    if (zmq_send(socket, to->id, to->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (to->delimiter && zmq_send(socket, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

int wire_send(void *socket, const peer_t *to, zmq_msg_t *data)
{
    if (send_head(socket, to) < 0)
        return -1;
    return zmq_msg_send(data, socket, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

int wire_send_back(void *socket, wire_msg_t *m, zmq_msg_t *data)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_copy(&id, &m->id) < 0 || zmq_msg_send(&id, socket, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return -1;
    }
    if (m->delimiter && zmq_send(socket, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_msg_send(data, socket, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}
