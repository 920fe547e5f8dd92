/* conn_bytes: the kernel's byte counters per connection. See conn_bytes.h. */
#include "conn_bytes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <linux/tcp.h>   /* glibc's struct tcp_info lacks the byte counters */

#include "clock.h"
#include "log.h"

/* Descriptors looked at per call: a sweep over many connections is cut
 * into passes of about a millisecond (one getsockopt each), so that it
 * never holds up the loop (measured: docs/security.md). */
#define SLICE 1024
/* Connections cut per sweep for the total at most (each a scan for the
 * largest): the next sweep takes the rest. */
#define TOTAL_CUTS_MAX 64
/* Heartbeat bytes a connection may send without a message: a PONG (7
 * bytes) to each of the broker's PINGs and a PING (9) a second of its own,
 * rounded up (measured with ss -ti: 7 and 16 bytes a second). */
#define HEARTBEAT_BYTES 16
/* Bytes with no whole message past which no allowance helps. */
#define RAW_FACTOR 8

static log_ratelimit_t cut_limit;

conn_bytes_t *conn_bytes_new(const conn_bytes_limits_t *lim)
{
    conn_bytes_t *cb = calloc(1, sizeof *cb);
    if (!cb)
        return NULL;
    cb->lim = *lim;
    cb->max_queued = lim->max_queued ? lim->max_queued : UINT64_MAX;
    cb->max_queued_total = lim->max_queued_total ? lim->max_queued_total : UINT64_MAX;
    cb->hard_total = lim->max_queued_total ? 2 * (uint64_t)lim->max_queued_total : UINT64_MAX;
    cb->reserve = lim->reserve < cb->max_queued ? lim->reserve : cb->max_queued;
    if (!cb->lim.check_ms)
        cb->lim.check_ms = 100;
    if (!cb->lim.heartbeat_ivl_ms)
        cb->lim.heartbeat_ivl_ms = 1000;
    cb->cursor = -1;
    return cb;
}

void conn_bytes_free(conn_bytes_t **self_p)
{
    conn_bytes_t *cb = *self_p;
    if (!cb)
        return;
    free(cb->slots);
    free(cb);
    *self_p = NULL;
}

static bool reserve(conn_bytes_t *cb, int fd)
{
    if (fd < cb->cap)
        return true;
    int cap = cb->cap ? cb->cap : 64;
    while (cap <= fd)
        cap *= 2;
    conn_slot_t *grown = realloc(cb->slots, (size_t)cap * sizeof *grown);
    if (!grown)
        return false;
    memset(grown + cb->cap, 0, (size_t)(cap - cb->cap) * sizeof *grown);
    cb->slots = grown;
    cb->cap = cap;
    return true;
}

/* The kernel's counts for a TCP descriptor. Returns 0, or -1 (not TCP,
 * not open). */
static int tcp_counts(int fd, uint64_t *received, uint64_t *acked)
{
    struct tcp_info info;
    socklen_t len = sizeof info;
    memset(&info, 0, sizeof info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
        return -1;
    if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received)
        return -1;                      /* a kernel before 4.1 */
    *received = info.tcpi_bytes_received;
    *acked = info.tcpi_bytes_acked;
    return 0;
}

static ino_t inode_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* Takes the kernel's counts as the new starting point. */
static void mark(conn_slot_t *slot, uint64_t received, uint64_t acked, uint64_t now_ms)
{
    slot->marked = true;
    slot->rx_mark = received;
    slot->mark_ms = now_ms;
    slot->acked_mark = acked;
    slot->reads_seen = slot->reads;
    slot->unread = 0;
}

void conn_bytes_accepted(conn_bytes_t *cb, int fd)
{
    if (fd < 0 || !reserve(cb, fd))
        return;
    conn_slot_t *slot = &cb->slots[fd];
    uint64_t received, acked;
    slot->open = true;
    slot->marked = false;
    slot->unread = 0;
    slot->ino = inode_of(fd);
    slot->tcp = tcp_counts(fd, &received, &acked) == 0;
    /* from the connection's first byte: what was sent to its peer before
     * this event was read is credited when taken, and what the peer sent
     * before counts as unread until a whole message is seen */
    if (slot->tcp)
        mark(slot, 0, 0, clock_ms());
}

void conn_bytes_closed(conn_bytes_t *cb, int fd)
{
    if (fd < 0 || fd >= cb->cap)
        return;
    cb->slots[fd].open = false;
    cb->slots[fd].marked = false;
    cb->slots[fd].unread = 0;
}

/* What the kernel says the peer on this slot has taken since the last
 * look comes off its count. A counter that went back is another
 * connection on a reused descriptor: a new start, no credit. */
static void credit(conn_bytes_t *cb, conn_slot_t *slot, peer_t *peer, uint64_t acked)
{
    if (acked < slot->acked_mark) {
        slot->acked_mark = acked;
        return;
    }
    uint64_t taken = acked - slot->acked_mark;
    slot->acked_mark = acked;
    if (!peer)
        return;
    if (taken > peer->queued_bytes)
        taken = peer->queued_bytes;
    peer->queued_bytes -= taken;
    cb->queued_total -= taken < cb->queued_total ? taken : cb->queued_total;
}

/* A peer whose bytes nobody can count (ipc://, or its descriptor unknown
 * or gone): it keeps the message bound only. */
static void forget_bytes(conn_bytes_t *cb, peer_t *peer)
{
    uint64_t n = peer->queued_bytes;
    cb->queued_total -= n < cb->queued_total ? n : cb->queued_total;
    peer->queued_bytes = 0;
}

bool conn_bytes_recheck(conn_bytes_t *cb, peer_t *to, uint64_t bytes)
{
    int fd = to->fd;
    uint64_t received, acked;
    if (fd < 0 || fd >= cb->cap || !cb->slots[fd].open || !cb->slots[fd].tcp ||
        tcp_counts(fd, &received, &acked) < 0) {
        forget_bytes(cb, to);
    } else {
        conn_slot_t *slot = &cb->slots[fd];
        if (!slot->marked)
            mark(slot, received, acked, clock_ms());
        else
            credit(cb, slot, to, acked);
    }
    bool fits = conn_bytes_fits(cb, to, bytes);
    if (!fits)
        cb->refused_queued++;
    return fits;
}

uint64_t conn_bytes_next_due(const conn_bytes_t *cb)
{
    return cb->cursor >= 0 ? 0 : cb->next_sweep_ms;
}

static void describe_peer(int fd, char *out, size_t cap)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getpeername(fd, (struct sockaddr *)&addr, &len) == 0) {
        if (addr.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (addr.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(out, cap, "%s:%u", host, port);
}

/* Ends the connection on `fd` if it still is the one accepted there (its
 * inode): libzmq sees the end, frees what it buffered, and the monitor
 * reports the disconnect. */
static void cut(conn_bytes_t *cb, int fd, const char *bound, size_t limit)
{
    conn_slot_t *slot = &cb->slots[fd];
    uint64_t unread = slot->unread;
    slot->marked = false;
    slot->unread = 0;
    if (inode_of(fd) != slot->ino)
        return;                 /* the descriptor went to another connection meanwhile */
    char who[INET6_ADDRSTRLEN + 8];
    describe_peer(fd, who, sizeof who);
    if (shutdown(fd, SHUT_RDWR) < 0)
        return;
    slot->open = false;
    cb->cut_unread++;
    log_limited(&cut_limit, 10, LOG_LEVEL_WARN,
                "closed the connection from %s: %llu bytes received and no whole message "
                "(%s %zu)", who, (unsigned long long)unread, bound, limit);
}

/* One connection of the sweep. */
static void look(conn_bytes_t *cb, registry_t *reg, int fd, uint64_t now_ms)
{
    conn_slot_t *slot = &cb->slots[fd];
    uint64_t received, acked;
    if (!slot->open || !slot->tcp)
        return;
    if (tcp_counts(fd, &received, &acked) < 0) {
        slot->marked = false;   /* closed before the monitor said so */
        return;
    }
    if (!slot->marked || received < slot->rx_mark) {
        mark(slot, received, acked, now_ms);
        return;
    }
    peer_t *peer = registry_peer_on_fd(reg, fd);
    credit(cb, slot, peer && peer->fd == fd && peer->kind == PEER_REMOTE ? peer : NULL, acked);
    if (slot->reads != slot->reads_seen) {
        slot->reads_seen = slot->reads;
        slot->rx_mark = received;
        slot->mark_ms = now_ms;
        slot->unread = 0;
        return;
    }
    uint64_t raw = received - slot->rx_mark, quiet_ms = now_ms - slot->mark_ms;
    uint64_t allowance = quiet_ms * HEARTBEAT_BYTES / cb->lim.heartbeat_ivl_ms +
                         quiet_ms * HEARTBEAT_BYTES / 1000;
    slot->unread = raw > allowance ? raw - allowance : 0;
    if (!cb->lim.max_unread)
        return;
    if (slot->unread > cb->lim.max_unread || raw > RAW_FACTOR * (uint64_t)cb->lim.max_unread)
        cut(cb, fd, "--max-unread-bytes", cb->lim.max_unread);
    else
        cb->sweep_unread += slot->unread;
}

/* The end of a sweep: the total of unread bytes, and the queued total
 * recounted (peers gone since leave it; peers that cannot be counted
 * drop out of it). */
static void finish_sweep(conn_bytes_t *cb, registry_t *reg)
{
    for (int cuts = 0; cb->lim.max_unread_total && cb->sweep_unread > cb->lim.max_unread_total &&
                       cuts < TOTAL_CUTS_MAX; cuts++) {
        int largest = -1;
        for (int fd = 0; fd < cb->cap; fd++)
            if (cb->slots[fd].open && cb->slots[fd].unread > 0 &&
                (largest < 0 || cb->slots[fd].unread > cb->slots[largest].unread))
                largest = fd;
        if (largest < 0)
            break;
        uint64_t unread = cb->slots[largest].unread;
        cb->sweep_unread -= unread < cb->sweep_unread ? unread : cb->sweep_unread;
        cut(cb, largest, "--max-unread-bytes-total", cb->lim.max_unread_total);
    }
    uint64_t total = 0;
    for (peer_t *peer = registry_next_peer(reg, NULL); peer; peer = registry_next_peer(reg, peer)) {
        if (peer->kind != PEER_REMOTE || !peer->queued_bytes)
            continue;
        int fd = peer->fd;
        if (fd < 0 || fd >= cb->cap || !cb->slots[fd].open || !cb->slots[fd].tcp)
            peer->queued_bytes = 0;
        total += peer->queued_bytes;
    }
    cb->queued_total = total;
}

void conn_bytes_check(conn_bytes_t *cb, registry_t *reg, uint64_t now_ms)
{
    if (cb->cursor < 0) {
        if (now_ms < cb->next_sweep_ms)
            return;
        cb->cursor = 0;
        cb->sweep_unread = 0;
        cb->sweep_us = 0;
    }
    uint64_t started = clock_us();
    int end = cb->cursor + SLICE < cb->cap ? cb->cursor + SLICE : cb->cap;
    for (int fd = cb->cursor; fd < end; fd++)
        look(cb, reg, fd, now_ms);
    cb->cursor = end;
    if (cb->cursor >= cb->cap) {
        finish_sweep(cb, reg);
        cb->cursor = -1;
    }
    cb->sweep_us += clock_us() - started;
    if (cb->cursor >= 0)
        return;
    /* at most a tenth of the loop's time: with many connections a sweep
     * takes longer, and they come less often */
    uint64_t pause_ms = 9 * cb->sweep_us / 1000;
    cb->next_sweep_ms = now_ms + (pause_ms > cb->lim.check_ms ? pause_ms : cb->lim.check_ms);
    cb->last_sweep_us = cb->sweep_us;
}
