/* conn_bytes: bytes per TCP connection, in and out, from the kernel's
 * counters (TCP_INFO), so that the broker bounds bytes and not only
 * messages (docs/security.md, "Bytes per connection").
 *
 * In: libzmq shows the broker a message only once its last frame is in,
 * so a peer that never ends a multipart message is invisible to it while
 * libzmq buffers every frame. The watchdog compares, per connection, the
 * bytes the kernel received since the broker last read a whole message
 * from it (tcpi_bytes_received) with --max-unread-bytes, and the sum over
 * all connections with --max-unread-bytes-total, and cuts a connection
 * over them with shutdown(2) (libzmq then sees it end and the monitor
 * reports the disconnect). Heartbeats are bytes too, which no message
 * follows: an allowance for them (16 bytes a broker heartbeat and 16 a
 * second) comes off, and past 8 x --max-unread-bytes received with no
 * whole message a connection is cut whatever the allowance says.
 *
 * Out: each remote peer's bytes handed to libzmq and not yet taken by the
 * peer's kernel (tcpi_bytes_acked) are counted in peer_t.queued_bytes, and
 * their sum here; a send past --max-queued-bytes or
 * --max-queued-bytes-total is refused as if the peer's queue were full.
 *
 * Descriptors come from the ROUTER's socket monitor (accepted, gone) and
 * from ZMQ_SRCFD. Only TCP has the counters: on ipc:// connections
 * neither bound applies (the message bounds still do). */
#ifndef SMARTSHOP_CONN_BYTES_H
#define SMARTSHOP_CONN_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "registry.h"

/* What the broker knows of one accepted connection, by descriptor. */
typedef struct {
    uint32_t reads;             /* whole messages the broker read from it (hot path) */
    uint32_t reads_seen;        /* `reads` at the last check */
    bool open;                  /* accepted, no disconnect seen since */
    bool tcp;                   /* TCP_INFO works on it */
    bool marked;                /* the marks below hold */
    ino_t ino;                  /* the socket's inode when accepted: who the fd is */
    uint64_t rx_mark;           /* tcpi_bytes_received when a whole message was last seen */
    uint64_t mark_ms;           /* and when */
    uint64_t acked_mark;        /* tcpi_bytes_acked at the last look */
    uint64_t unread;            /* bytes received since rx_mark past the heartbeat
                                   allowance, at the last check */
} conn_slot_t;

typedef struct {
    size_t max_unread;          /* per connection; 0: no watchdog */
    size_t max_unread_total;
    size_t max_queued;          /* per peer; 0: no byte bound on sends */
    size_t max_queued_total;
    size_t reserve;             /* bytes each peer may hold when the total is taken */
    unsigned check_ms;          /* how often every connection is looked at */
    unsigned heartbeat_ivl_ms;  /* the broker's PING interval (each gets a PONG) */
} conn_bytes_limits_t;

/* In the header (not private to the .c) only so that the message path's
 * functions below can be inline; nothing else touches its fields. */
typedef struct conn_bytes {
    conn_bytes_limits_t lim;
    conn_slot_t *slots;         /* by descriptor */
    int cap;
    uint64_t max_queued, max_queued_total, hard_total; /* the bounds (UINT64_MAX: none) */
    uint64_t reserve;           /* each peer's own share past the total (conn_bytes_fits) */
    uint64_t queued_total;      /* sum of the peers' queued_bytes (recounted each sweep) */
    uint64_t next_sweep_ms;
    int cursor;                 /* next descriptor of the sweep in progress, -1: none */
    uint64_t sweep_unread;      /* unread bytes summed so far in this sweep */
    uint64_t sweep_us, last_sweep_us; /* time the sweep in progress, the last one took */
    uint64_t cut_unread;        /* connections cut for unread bytes (stats) */
    uint64_t refused_queued;    /* sends refused for queued bytes (stats) */
} conn_bytes_t;

conn_bytes_t *conn_bytes_new(const conn_bytes_limits_t *lim);
void conn_bytes_free(conn_bytes_t **self_p);

/* The socket monitor's events. */
void conn_bytes_accepted(conn_bytes_t *cb, int fd);
void conn_bytes_closed(conn_bytes_t *cb, int fd);

/* A whole message was read from `fd` (the message path: one compare, one add). */
static inline void conn_bytes_read(conn_bytes_t *cb, int fd)
{
    if ((unsigned)fd < (unsigned)cb->cap)
        cb->slots[fd].reads++;
}

/* The wire bytes of one message of `len` to a peer (ZMTP framing: a flags
 * byte and a 1- or 8-byte length a frame; CURVE boxes each frame in a
 * MESSAGE command of 33 bytes more). Exact, so the count does not drift. */
static inline uint64_t conn_bytes_wire_size(size_t len, bool delimiter, bool curve)
{
    size_t body = len + (curve ? 33 : 0);
    uint64_t n = body + (body > 255 ? 9 : 2);
    if (delimiter)
        n += curve ? 2 + 33 : 2;
    return n;
}

/* Whether `bytes` more to `to` stay within both byte bounds. When the
 * shared bytes are taken, each peer still has a share of its own: one
 * message of any size when it has nothing queued, or up to `reserve`
 * (one message of the size limit), as long as the total is under twice
 * its bound, so that peers holding the shared bytes cannot starve the
 * others. The message path: two compares. */
static inline bool conn_bytes_fits(const conn_bytes_t *cb, const peer_t *to, uint64_t bytes)
{
    uint64_t mine = to->queued_bytes + bytes;
    if (mine <= cb->max_queued && cb->queued_total + bytes <= cb->max_queued_total)
        return true;
    return (to->queued_bytes == 0 || mine <= cb->reserve) &&
           cb->queued_total + bytes <= cb->hard_total;
}

/* Counts `bytes` handed to libzmq for `to`. */
static inline void conn_bytes_sent(conn_bytes_t *cb, peer_t *to, uint64_t bytes)
{
    to->queued_bytes += bytes;
    cb->queued_total += bytes;
}

/* `to` did not fit: asks the kernel what it has taken since (one
 * getsockopt) and credits it. Returns true if `bytes` fit now. */
bool conn_bytes_recheck(conn_bytes_t *cb, peer_t *to, uint64_t bytes);

/* Whether a check is due or in progress, and when the next one is. */
uint64_t conn_bytes_next_due(const conn_bytes_t *cb);

/* Looks at up to a slice of connections (a sweep every check_ms, cut in
 * slices so that no pass takes long): credits what peers took, and cuts
 * connections over the unread bounds. Call only right after the ROUTER
 * was read empty, so every whole message that arrived was seen. */
void conn_bytes_check(conn_bytes_t *cb, registry_t *reg, uint64_t now_ms);

#endif
