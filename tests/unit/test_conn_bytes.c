/* conn_bytes: wire sizes, the share rules, and the watchdog and the
 * credit on real loopback TCP connections. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "conn_bytes.h"

static void wire_sizes(void)
{
    CHECK_EQ_INT(conn_bytes_wire_size(0, false, false), 2);
    CHECK_EQ_INT(conn_bytes_wire_size(255, false, false), 257);
    CHECK_EQ_INT(conn_bytes_wire_size(256, false, false), 265);   /* 8-byte length */
    CHECK_EQ_INT(conn_bytes_wire_size(100, true, false), 104);    /* + empty delimiter */
    CHECK_EQ_INT(conn_bytes_wire_size(100, false, true), 135);    /* CURVE's box */
    CHECK_EQ_INT(conn_bytes_wire_size(300, true, true), 333 + 9 + 35);
}

static void shares(void)
{
    conn_bytes_limits_t lim = {.max_queued = 1000, .max_queued_total = 3000, .reserve = 500};
    conn_bytes_t *cb = conn_bytes_new(&lim);
    peer_t a = {0}, b = {0}, c = {0};
    CHECK(conn_bytes_fits(cb, &a, 5000));        /* nothing queued: one message of any size */
    conn_bytes_sent(cb, &a, 900);
    CHECK(!conn_bytes_fits(cb, &a, 200));        /* past its own bound */
    CHECK(conn_bytes_fits(cb, &a, 100));
    cb->queued_total = 2900;                     /* others hold the shared bytes */
    b.queued_bytes = 100;
    c.queued_bytes = 600;
    CHECK(conn_bytes_fits(cb, &b, 300));         /* within its share past the total */
    CHECK(!conn_bytes_fits(cb, &c, 200));        /* over its share */
    cb->queued_total = 6000;                     /* twice the total: nobody */
    CHECK(!conn_bytes_fits(cb, &b, 1));
    peer_t empty = {0};
    CHECK(!conn_bytes_fits(cb, &empty, 1));
    conn_bytes_free(&cb);
    CHECK(cb == NULL);
}

/* A connected loopback pair: *server is the accepted end. */
static int tcp_pair(int *client, int *server)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 4) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        return -1;
    *client = socket(AF_INET, SOCK_STREAM, 0);
    if (*client < 0 || connect(*client, (struct sockaddr *)&addr, sizeof addr) < 0)
        return -1;
    *server = accept(listener, NULL, NULL);
    close(listener);
    return *server < 0 ? -1 : 0;
}

/* Writes n bytes on `from` and waits until they are through. */
static void push(int from, int to, size_t n)
{
    char buf[8192] = {0};
    while (n > 0) {
        size_t step = n < sizeof buf ? n : sizeof buf;
        ssize_t w = write(from, buf, step);
        if (w <= 0)
            return;
        n -= (size_t)w;
    }
    /* until the receiving kernel has acknowledged them all */
    (void)to;
    uint64_t deadline = clock_ms() + 5000;
    int unacked = 1;
    while (clock_ms() < deadline && ioctl(from, SIOCOUTQ, &unacked) == 0 && unacked > 0)
        usleep(1000);
}

/* Whether the broker's end was shut down: the other end reads EOF. */
static bool was_cut(int client)
{
    struct pollfd p = {.fd = client, .events = POLLIN};
    if (poll(&p, 1, 300) <= 0)
        return false;
    char c;
    ssize_t r = read(client, &c, 1);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void watchdog(void)
{
    conn_bytes_limits_t lim = {.max_unread = 4096, .max_unread_total = 1 << 20,
                               .check_ms = 1, .heartbeat_ivl_ms = 1000};
    conn_bytes_t *cb = conn_bytes_new(&lim);
    registry_t *reg = registry_new();
    int quiet_c, quiet_s, busy_c, busy_s, reader_c, reader_s;
    CHECK(tcp_pair(&quiet_c, &quiet_s) == 0);
    CHECK(tcp_pair(&busy_c, &busy_s) == 0);
    CHECK(tcp_pair(&reader_c, &reader_s) == 0);
    conn_bytes_accepted(cb, quiet_s);
    conn_bytes_accepted(cb, busy_s);
    conn_bytes_accepted(cb, reader_s);
    /* busy sends 5,000 bytes of a message never ended; reader sends the
     * same but the broker read whole messages from it meanwhile */
    push(busy_c, busy_s, 5000);
    push(reader_c, reader_s, 5000);
    conn_bytes_read(cb, reader_s);
    push(quiet_c, quiet_s, 1000);
    uint64_t now = clock_ms();
    conn_bytes_check(cb, reg, now);
    CHECK(was_cut(busy_c));
    CHECK_EQ_INT(cb->cut_unread, 1);
    CHECK(!was_cut(quiet_c));
    CHECK(!was_cut(reader_c));
    /* the reader's next bytes count from its last whole message */
    push(reader_c, reader_s, 3000);
    conn_bytes_check(cb, reg, now + 1000);     /* well past the pause after a look */
    CHECK(!was_cut(reader_c));
    push(reader_c, reader_s, 2000);
    conn_bytes_check(cb, reg, now + 2000);
    CHECK(was_cut(reader_c));

    conn_bytes_free(&cb);

    /* credit: what the peer's kernel acknowledged comes off */
    conn_bytes_limits_t tight = {.max_queued = 8000, .max_queued_total = 1 << 20};
    cb = conn_bytes_new(&tight);
    conn_bytes_accepted(cb, quiet_s);            /* counts from the connection's start */
    peer_t *peer = registry_add_peer(reg, "q", 1, PEER_REMOTE, quiet_s);
    conn_bytes_sent(cb, peer, 10000);            /* as if handed to libzmq */
    CHECK(!conn_bytes_fits(cb, peer, 1));
    CHECK(!conn_bytes_recheck(cb, peer, 1));     /* nothing taken yet */
    push(quiet_s, quiet_c, 4000);                /* libzmq wrote 4,000 of them */
    CHECK(conn_bytes_recheck(cb, peer, 1));
    CHECK_EQ_INT(peer->queued_bytes, 6000);
    CHECK_EQ_INT(cb->queued_total, 6000);
    CHECK_EQ_INT(cb->refused_queued, 1);
    /* a peer whose descriptor has no counts (ipc://, gone) is not counted */
    peer_t *local = registry_add_peer(reg, "l", 1, PEER_REMOTE, -1);
    conn_bytes_sent(cb, local, 9000);
    CHECK(conn_bytes_recheck(cb, local, 1));
    CHECK_EQ_INT(local->queued_bytes, 0);
    CHECK_EQ_INT(cb->queued_total, 6000);
    registry_remove_peer(reg, &local);
    registry_remove_peer(reg, &peer);
    close(quiet_c), close(quiet_s), close(busy_c), close(busy_s), close(reader_c), close(reader_s);
    conn_bytes_free(&cb);
    registry_free(&reg);
}

int main(void)
{
    wire_sizes();
    shares();
    watchdog();
    return check_done("conn_bytes");
}
