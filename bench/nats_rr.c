/* nats_rr: the benchmark's request/reply load against nats-server, by
 * NATS's text protocol spoken here by hand (INFO, CONNECT, SUB, PUB, MSG,
 * PING/PONG; no client library), so that bench/run.sh measures a peer
 * broker doing the work smartshop-loadgen and smartshop-bench-echo do
 * through ours, in the same run.
 *
 *   smartshop-nats-rr --role echo --endpoint 127.0.0.1:4222
 *   smartshop-nats-rr --role load --endpoint 127.0.0.1:4222 --server-pid PID
 *                     [--echo-pid PID] [--clients 4] [--window 64]
 *                     [--payload 64] [--warmup 1] [--duration 4] [--label L]
 *
 * echo: subscribes to "echo-service" in a queue group and answers each
 * message on its reply subject with a response envelope of the C echo's
 * shape (bench/echo.c), built from the request's fields as that one does.
 * load: --clients connections, each with --window requests in flight
 * (PUB echo-service <inbox>.<slot>), every request the very envelope
 * loadgen sends (the same bytes on the wire, counted the same way). Prints
 * one key=value line with loadgen's keys: rt_per_s, p50_us, p99_us, lost,
 * and the server's CPU per round trip as broker_sched_us_per_rt (all of
 * nats-server's threads, /proc/PID/task/TID/schedstat). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"

#define MAX_CLIENTS 64
#define BUF_CAP (1 << 20)

static struct {
    bool echo;
    const char *endpoint, *label;
    int clients, window, payload, server_pid, echo_pid;
    double warmup, duration;
} opt = {.clients = 4, .window = 64, .payload = 64, .warmup = 1, .duration = 4, .label = "nats"};

static void die(const char *what)
{
    fprintf(stderr, "nats_rr: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static int tcp_connect(void)
{
    int fd = bu_tcp_connect(opt.endpoint);
    if (fd == -2)
        die("--endpoint host:port");
    if (fd < 0)
        die("connect to nats-server");
    return fd;
}

static void write_all(int fd, const char *text, size_t len)
{
    if (bu_write_all(fd, text, len) < 0)
        die("write to nats-server");
}

/* A connection: what was read and not parsed yet, what is to be written. */
typedef struct {
    int fd;
    char *in, *out;
    size_t in_len, out_len;
} conn_t;

static void conn_open(conn_t *c)
{
    c->fd = tcp_connect();
    c->in = malloc(BUF_CAP);
    c->out = malloc(BUF_CAP);
    if (!c->in || !c->out)
        die("malloc");
    c->in_len = c->out_len = 0;
    /* INFO first; then CONNECT, and a PING whose PONG says we are in */
    const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n";
    write_all(c->fd, hello, strlen(hello));
}

static void queue(conn_t *c, const char *p, size_t n)
{
    if (c->out_len + n > BUF_CAP) {
        write_all(c->fd, c->out, c->out_len);
        c->out_len = 0;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void flush_out(conn_t *c)
{
    if (c->out_len)
        write_all(c->fd, c->out, c->out_len);
    c->out_len = 0;
}

/* Reads what the socket has (it was polled readable). */
static void fill(conn_t *c)
{
    ssize_t n = read(c->fd, c->in + c->in_len, BUF_CAP - c->in_len);
    if (n <= 0)
        die("read from nats-server");
    c->in_len += (size_t)n;
}

/* One MSG as parsed: subject, reply subject (may be empty), payload. */
typedef struct {
    const char *subject, *reply, *data;
    size_t subject_len, reply_len, data_len;
} nats_msg_t;

/* Calls on_msg for every whole MSG in c->in, answers PING, skips INFO,
 * PONG, +OK; -ERR is fatal. Keeps a partial frame for the next read. */
static void parse(conn_t *c, void (*on_msg)(conn_t *, const nats_msg_t *, void *), void *ctx)
{
    char *b = c->in;
    size_t pos = 0;
    for (;;) {
        char *eol = memchr(b + pos, '\n', c->in_len - pos);
        if (!eol)
            break;
        size_t line = (size_t)(eol - (b + pos)) + 1;
        if (line >= 4 && memcmp(b + pos, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n */
            const char *f[5];
            size_t fl[5];
            int nf = 0;
            const char *p = b + pos + 4, *end = eol - (eol[-1] == '\r');
            while (p < end && nf < 5) {
                const char *sp = memchr(p, ' ', (size_t)(end - p));
                const char *stop = sp ? sp : end;
                f[nf] = p;
                fl[nf++] = (size_t)(stop - p);
                p = sp ? sp + 1 : end;
            }
            if (nf < 3)
                die("bad MSG line from nats-server");
            size_t len = strtoul(f[nf - 1], NULL, 10);
            if (pos + line + len + 2 > c->in_len)
                break;                      /* the payload is not all here yet */
            nats_msg_t m = {f[0], nf == 4 ? f[2] : "", b + pos + line, fl[0], nf == 4 ? fl[2] : 0, len};
            on_msg(c, &m, ctx);
            pos += line + len + 2;
        } else {
            if (line >= 4 && memcmp(b + pos, "PING", 4) == 0)
                queue(c, "PONG\r\n", 6);
            else if (line >= 4 && memcmp(b + pos, "-ERR", 4) == 0) {
                fprintf(stderr, "nats_rr: nats-server: %.*s", (int)line, b + pos);
                exit(1);
            }
            pos += line;
        }
    }
    memmove(b, b + pos, c->in_len - pos);
    c->in_len -= pos;
}

/* --- echo: the C echo's work, over NATS --- */

static void echo_msg(conn_t *c, const nats_msg_t *m, void *ctx)
{
    unsigned long long *seq = ctx;
    if (!m->reply_len)
        return;
    const char *src, *mid, *action;
    size_t src_len, mid_len, action_len;
    if (!BU_FIND(m->data, m->data_len, "\"src\":\"", &src, &src_len) ||
        !BU_FIND(m->data, m->data_len, "\"msg_id\":\"", &mid, &mid_len))
        return;
    bool has_action = BU_FIND(m->data, m->data_len, "\"action\":\"", &action, &action_len);
    const char *payload = "{}";
    size_t payload_len = 2;
    const char *pk = memmem(m->data, m->data_len, "\"payload\":", 10);
    if (pk) {
        const char *pe = bu_skip_value(pk + 10, m->data + m->data_len);
        if (pe) {
            payload = pk + 10;
            payload_len = (size_t)(pe - payload);
        }
    }
    char body[70000];
    int n = snprintf(body, sizeof body,
                     "{\"msg_id\":\"n%llx\",\"type\":\"response\",\"src\":\"echo-service\",\"dst\":\"%.*s\","
                     "\"action\":%s%.*s%s,\"payload\":%.*s,\"correlation_id\":\"%.*s\",\"timestamp\":null}",
                     ++*seq, (int)src_len, src, has_action ? "\"" : "null",
                     has_action ? (int)action_len : 0, has_action ? action : "", has_action ? "\"" : "",
                     (int)payload_len, payload, (int)mid_len, mid);
    if (n < 0 || (size_t)n >= sizeof body)
        return;
    char head[256];
    int h = snprintf(head, sizeof head, "PUB %.*s %d\r\n", (int)m->reply_len, m->reply, n);
    queue(c, head, (size_t)h);
    queue(c, body, (size_t)n);
    queue(c, "\r\n", 2);
}

static int run_echo(void)
{
    conn_t c;
    conn_open(&c);
    const char *sub = "SUB echo-service echoes 1\r\n";
    write_all(c.fd, sub, strlen(sub));
    unsigned long long seq = 0;
    printf("registered echo-service on %s\n", opt.endpoint);
    fflush(stdout);
    for (;;) {
        struct pollfd p = {c.fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            die("poll");
        fill(&c);
        parse(&c, echo_msg, &seq);
        flush_out(&c);
    }
    return 0;
}

/* --- load --- */

typedef struct {
    conn_t conn;
    uint64_t *sent_ns;          /* per slot; 0: free */
    int outstanding;
} client_t;

static client_t clients[MAX_CLIENTS];
static char tag[32];
static char timestamp[32];
static uint32_t *lat;
static size_t lat_n, lat_cap;
static uint64_t rt, stray;
static bool measuring, sending;

static void update_timestamp(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(timestamp, sizeof timestamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(timestamp + n, sizeof timestamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static size_t request_len;

/* The envelope loadgen sends (bench/loadgen.c build_request), on a slot. */
static void send_slot(int ci, int si, uint64_t now)
{
    client_t *c = &clients[ci];
    static unsigned seq;
    char body[70000], head[160];
    int data = opt.payload - 11 > 0 ? opt.payload - 11 : 0;
    int n = snprintf(body, sizeof body,
                     "{\"msg_id\":\"%s-%x-%x-%x\",\"type\":\"request\",\"src\":\"lg%s-%d\","
                     "\"dst\":\"echo-service\",\"action\":\"echo\",\"payload\":{\"data\":\"",
                     tag, ci, si, ++seq, tag, ci);
    memset(body + n, 'x', (size_t)data);
    n += data;
    n += snprintf(body + n, sizeof body - (size_t)n, "\"},\"correlation_id\":null,\"timestamp\":\"%s\"}",
                  timestamp);
    request_len = (size_t)n;
    int h = snprintf(head, sizeof head, "PUB echo-service _INBOX.%s.%d.%d %d\r\n", tag, ci, si, n);
    queue(&c->conn, head, (size_t)h);
    queue(&c->conn, body, (size_t)n);
    queue(&c->conn, "\r\n", 2);
    c->sent_ns[si] = now;
    c->outstanding++;
}

static void load_msg(conn_t *conn, const nats_msg_t *m, void *ctx)
{
    int ci = (int)(intptr_t)ctx;
    client_t *c = &clients[ci];
    (void)conn;
    /* _INBOX.<tag>.<ci>.<slot>: the slot is after the last dot */
    const char *dot = memrchr(m->subject, '.', m->subject_len);
    int si = dot ? atoi(dot + 1) : -1;
    if (si < 0 || si >= opt.window || !c->sent_ns[si]) {
        stray++;
        return;
    }
    uint64_t now = bu_now_ns();
    if (measuring) {
        if (lat_n == lat_cap) {
            lat_cap = lat_cap ? lat_cap * 2 : 1 << 20;
            lat = realloc(lat, lat_cap * sizeof *lat);
            if (!lat)
                die("realloc");
        }
        uint64_t d = now - c->sent_ns[si];
        lat[lat_n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        rt++;
    }
    c->sent_ns[si] = 0;
    c->outstanding--;
    if (sending)
        send_slot(ci, si, now);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(double q)
{
    if (!lat_n)
        return 0;
    size_t i = (size_t)(q * (double)(lat_n - 1));
    return lat[i] / 1000.0;
}

static uint64_t sched_of(int pid, bool *ok)
{
    uint64_t ns = 0;
    *ok = pid > 0 && bu_sched_ns(pid, &ns);
    return ns;
}

static int run_load(void)
{
    snprintf(tag, sizeof tag, "%x%04x", (unsigned)getpid(), (unsigned)(bu_now_ns() & 0xffff));
    update_timestamp();
    struct pollfd fds[MAX_CLIENTS];
    for (int ci = 0; ci < opt.clients; ci++) {
        client_t *c = &clients[ci];
        conn_open(&c->conn);
        c->sent_ns = calloc((size_t)opt.window, sizeof *c->sent_ns);
        char sub[128];
        int n = snprintf(sub, sizeof sub, "SUB _INBOX.%s.%d.* 1\r\nPING\r\n", tag, ci);
        write_all(c->conn.fd, sub, (size_t)n);
        /* the second PONG: our SUB is in place before the first request */
        for (int pongs = 0; pongs < 2;) {
            fill(&c->conn);
            pongs = 0;
            for (char *p = c->conn.in;
                 (p = memmem(p, c->conn.in_len - (size_t)(p - c->conn.in), "PONG", 4)); p += 4)
                pongs++;
        }
        c->conn.in_len = 0;
        fds[ci] = (struct pollfd){c->conn.fd, POLLIN, 0};
    }
    sending = true;
    uint64_t now = bu_now_ns();
    for (int ci = 0; ci < opt.clients; ci++) {
        for (int si = 0; si < opt.window; si++)
            send_slot(ci, si, now);
        flush_out(&clients[ci].conn);
    }
    uint64_t warm_end = now + (uint64_t)(opt.warmup * 1e9);
    uint64_t meas_end = warm_end + (uint64_t)(opt.duration * 1e9), drain_end = 0;
    uint64_t t0 = 0, t1 = 0, s0 = 0, s1 = 0, e0 = 0, e1 = 0, last_ts = now;
    bool s_ok0 = false, s_ok1 = false, e_ok0 = false, e_ok1 = false;
    for (;;) {
        int outstanding = 0;
        for (int ci = 0; ci < opt.clients; ci++)
            outstanding += clients[ci].outstanding;
        now = bu_now_ns();
        if (now - last_ts > 1000000) {
            update_timestamp();
            last_ts = now;
        }
        if (!measuring && sending && now >= warm_end) {
            s0 = sched_of(opt.server_pid, &s_ok0);
            e0 = sched_of(opt.echo_pid, &e_ok0);
            t0 = bu_now_ns();
            measuring = true;
        } else if (measuring && now >= meas_end) {
            s1 = sched_of(opt.server_pid, &s_ok1);
            e1 = sched_of(opt.echo_pid, &e_ok1);
            t1 = bu_now_ns();
            measuring = sending = false;
            drain_end = t1 + 1000000000ull;
        }
        if (!sending && (outstanding == 0 || now >= drain_end))
            break;
        if (poll(fds, (nfds_t)opt.clients, 100) < 0 && errno != EINTR)
            die("poll");
        for (int ci = 0; ci < opt.clients; ci++) {
            if (!(fds[ci].revents & POLLIN))
                continue;
            fill(&clients[ci].conn);
            parse(&clients[ci].conn, load_msg, (void *)(intptr_t)ci);
            flush_out(&clients[ci].conn);
        }
    }
    int lost = 0;
    for (int ci = 0; ci < opt.clients; ci++)
        lost += clients[ci].outstanding;
    qsort(lat, lat_n, sizeof *lat, cmp_u32);
    double secs = (double)(t1 - t0) / 1e9;
    double s_us = s_ok0 && s_ok1 && rt ? (double)(s1 - s0) / 1e3 / (double)rt : -1;
    double e_us = e_ok0 && e_ok1 && rt ? (double)(e1 - e0) / 1e3 / (double)rt : -1;
    printf("label=%s server=nats clients=%d window=%d payload=%d request_bytes=%zu duration_s=%.3f "
           "rt=%" PRIu64 " rt_per_s=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=0 lost=%d "
           "stray=%" PRIu64 " broker_sched_us_per_rt=%.2f broker_cpu_util=%.2f echo_sched_us_per_rt=%.2f\n",
           opt.label, opt.clients, opt.window, opt.payload, request_len, secs, rt,
           secs > 0 ? (double)rt / secs : 0, pct_us(0.50), pct_us(0.99), pct_us(0.999), lost, stray,
           s_us, s_ok0 && s_ok1 && secs > 0 ? (double)(s1 - s0) / 1e9 / secs : -1, e_us);
    return rt && !lost ? 0 : 1;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"role", required_argument, 0, 'r'},       {"endpoint", required_argument, 0, 'e'},
        {"clients", required_argument, 0, 'c'},    {"window", required_argument, 0, 'w'},
        {"payload", required_argument, 0, 'P'},    {"warmup", required_argument, 0, 'W'},
        {"duration", required_argument, 0, 'd'},   {"server-pid", required_argument, 0, 'p'},
        {"echo-pid", required_argument, 0, 'E'},   {"label", required_argument, 0, 'l'},
        {0, 0, 0, 0},
    };
    int ch;
    const char *role = "load";
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r': role = optarg; break;
        case 'e': opt.endpoint = optarg; break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'P': opt.payload = atoi(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'p': opt.server_pid = atoi(optarg); break;
        case 'E': opt.echo_pid = atoi(optarg); break;
        case 'l': opt.label = optarg; break;
        default: fprintf(stderr, "nats_rr: see the comment at the top of bench/nats_rr.c\n"); return 2;
        }
    }
    opt.echo = strcmp(role, "echo") == 0;
    if (!opt.endpoint || (!opt.echo && strcmp(role, "load") != 0) || opt.clients < 1 ||
        opt.clients > MAX_CLIENTS || opt.window < 1 || opt.window > 100000 || opt.payload < 0 ||
        opt.payload > 60000) {
        fprintf(stderr, "nats_rr: --role echo|load --endpoint host:port, 1 <= --clients <= %d, "
                        "--payload <= 60000\n", MAX_CLIENTS);
        return 2;
    }
    return opt.echo ? run_echo() : run_load();
}
