/* smartshop-loadgen: the benchmark's load generator.
 *
 * N DEALER clients (one thread, many sockets), each with W requests in
 * flight, send requests of the seed's envelope to service S and time the
 * answers. It speaks only the wire (docs/protocol.md), so it measures the
 * broker and the ceiling (bench/ceiling.c) alike.
 *
 * Each request: {"msg_id":"<tag>-<client>-<slot>-<seq>","type":"request",
 * "src":"lg<tag>-<client>","dst":S,"action":"echo","payload":{"data":"xx.."},
 * "correlation_id":null,"timestamp":"..."}, the payload value P bytes long.
 * Answers are matched by the correlation_id found with a byte search (the
 * broker's, the C echo's and the Lua echo's output are known formats).
 *
 * Phases: idle peers register (--idle-peers), each client probes the
 * service until one request is answered, warm-up (--warmup s), measured
 * window (--duration s), then no new requests and up to --drain-ms for the
 * rest. Reports, as one key=value line (or --json):
 *   rt, rt_per_s          round trips answered in the measured window
 *   p50/p99/p999/max_us   their latency, send to receive
 *   errors                error answers (type error), whole run
 *   lost                  requests never answered by the end of the drain
 *   stray                 answers that matched no request in flight
 *   broker_cpu_us_per_rt  the broker's utime+stime (/proc/PID/stat, all
 *                         threads) over the window, per round trip
 *   broker_sched_us_per_rt the same from /proc/PID/task/TID/schedstat (ns
 *                         resolution), and broker_cpu_util in cores
 *   echo_cpu_us_per_rt    the same for --echo-pid, when given
 * With --rate R the clients together send at most R requests per second
 * (still at most W in flight each): at one fixed rate, the broker's and the
 * ceiling's CPU per round trip compare without the effect of batching.
 * Exit status 0 when the run completed (whatever it measured), 1 when it
 * could not start (no service answered the probe, idle peers refused). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_util.h"

#define APPEND(p, s, n) (memcpy((p), (s), (n)), (p) += (n))

typedef struct {
    uint64_t sent_ns;
    uint32_t seq;
    bool busy;
} slot_t;

typedef struct {
    void *sock;
    char name[64];
    char *mid;          /* the request's bytes between msg_id and timestamp */
    size_t mid_len;
    char *buf;          /* the request being built */
    slot_t *slots;
    int outstanding;
    size_t last_len;    /* bytes of the last request sent */
    int *idle;          /* with --rate: free slots waiting for their turn */
    int idle_count;
} client_t;

static struct {
    const char *endpoint, *service, *action, *label, *idle_names;
    int clients, window, payload, idle_peers;
    double duration, warmup, ready_timeout;
    int drain_ms;
    double rate;
    int broker_pid, echo_pid;
    bool json;
} opt = {
    .endpoint = "tcp://127.0.0.1:5555", .service = "echo-service", .action = "echo",
    .label = "run", .idle_names = "distinct",
    .clients = 4, .window = 64, .payload = 64, .idle_peers = 0,
    .duration = 5, .warmup = 1, .ready_timeout = 15, .drain_ms = 3000,
};

static char tag[16];
static size_t tag_len;
static char timestamp[32] = "1970-01-01T00:00:00.000Z";

static void update_timestamp(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(timestamp, sizeof timestamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(timestamp + n, sizeof timestamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* --- CPU time of another process --- */

static bool read_stat_ticks(int pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');        /* comm may hold spaces */
    if (!p)
        return false;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt
     * cminflt majflt cmajflt utime(14) stime(15) */
    unsigned long long ut, st;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    *ticks = ut + st;
    return true;
}

typedef struct {
    bool ok;
    uint64_t ticks, sched_ns;
} cpu_t;

static cpu_t read_cpu(int pid)
{
    cpu_t c = {false, 0, 0};
    if (pid > 0)
        c.ok = read_stat_ticks(pid, &c.ticks) && bu_sched_ns(pid, &c.sched_ns);
    return c;
}

/* --- requests --- */

static void build_client(client_t *c, int index)
{
    snprintf(c->name, sizeof c->name, "lg%s-%d", tag, index);
    int data = opt.payload - 11 > 0 ? opt.payload - 11 : 0;   /* {"data":""} is 11 bytes */
    size_t cap = 256 + strlen(c->name) + strlen(opt.service) + strlen(opt.action) + (size_t)data;
    c->mid = malloc(cap);
    int n = snprintf(c->mid, cap,
                     "\",\"type\":\"request\",\"src\":\"%s\",\"dst\":\"%s\",\"action\":\"%s\","
                     "\"payload\":{\"data\":\"",
                     c->name, opt.service, opt.action);
    memset(c->mid + n, 'x', (size_t)data);
    n += data;
    n += snprintf(c->mid + n, cap - (size_t)n, "\"},\"correlation_id\":null,\"timestamp\":\"");
    c->mid_len = (size_t)n;
    c->buf = malloc(cap + 128);
    c->slots = calloc((size_t)opt.window, sizeof *c->slots);
    c->idle = calloc((size_t)opt.window, sizeof *c->idle);
}

static size_t build_request(client_t *c, const char *id, size_t id_len)
{
    char *o = c->buf;
    APPEND(o, "{\"msg_id\":\"", 11);
    APPEND(o, id, id_len);
    APPEND(o, c->mid, c->mid_len);
    APPEND(o, timestamp, 24);
    APPEND(o, "\"}", 2);
    return (size_t)(o - c->buf);
}

static int send_slot(client_t *c, int ci, int si, uint64_t now)
{
    slot_t *s = &c->slots[si];
    char id[64];
    int id_len = snprintf(id, sizeof id, "%s-%x-%x-%x", tag, ci, si, ++s->seq);
    size_t len = build_request(c, id, (size_t)id_len);
    s->sent_ns = now;
    c->last_len = len;
    if (zmq_send(c->sock, c->buf, len, 0) < 0)
        return -1;
    s->busy = true;
    c->outstanding++;
    return 0;
}

/* Parses "<tag>-<ci>-<slot>-<seq>". */
static bool parse_corr(const char *v, size_t n, unsigned *ci, unsigned *si, unsigned *seq)
{
    if (n <= tag_len + 1 || memcmp(v, tag, tag_len) != 0 || v[tag_len] != '-')
        return false;
    unsigned vals[3] = {0, 0, 0};
    int k = 0;
    bool digits = false;
    for (size_t i = tag_len + 1; i < n; i++) {
        char ch = v[i];
        if (ch == '-') {
            if (!digits || ++k > 2)
                return false;
            digits = false;
        } else if (ch >= '0' && ch <= '9') {
            vals[k] = vals[k] * 16 + (unsigned)(ch - '0');
            digits = true;
        } else if (ch >= 'a' && ch <= 'f') {
            vals[k] = vals[k] * 16 + (unsigned)(ch - 'a' + 10);
            digits = true;
        } else {
            return false;
        }
    }
    if (k != 2 || !digits)
        return false;
    *ci = vals[0];
    *si = vals[1];
    *seq = vals[2];
    return true;
}

static bool is_error(const char *buf, size_t len)
{
    return memmem(buf, len, "\"type\":\"error\"", 14) != NULL;
}

/* Reads one whole message; the JSON is its last frame. */
static int recv_last(void *sock, zmq_msg_t *m, int flags)
{
    if (zmq_msg_recv(m, sock, flags) < 0)
        return -1;
    while (zmq_msg_more(m))
        zmq_msg_recv(m, sock, 0);
    return 0;
}

/* --- setup: idle peers and the probe --- */

static int register_idle(void *ctx, void ***socks_out)
{
    int k = opt.idle_peers;
    void **socks = calloc((size_t)k, sizeof *socks);
    *socks_out = socks;
    bool one = strcmp(opt.idle_names, "one") == 0;
    for (int i = 0; i < k; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        if (!socks[i]) {
            fprintf(stderr, "loadgen: idle peer %d: %s\n", i, zmq_strerror(errno));
            return -1;
        }
        int linger = 0;
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(socks[i], opt.endpoint) < 0)
            return -1;
        char msg[512];
        char name[64];
        if (one)
            snprintf(name, sizeof name, "idle%s", tag);
        else
            snprintf(name, sizeof name, "idle%s-%d", tag, i);
        int n = snprintf(msg, sizeof msg,
                         "{\"msg_id\":\"%s-idle-%x\",\"type\":\"register\",\"src\":\"%s\","
                         "\"dst\":\"broker\",\"action\":\"register\",\"payload\":{},"
                         "\"correlation_id\":null,\"timestamp\":\"%s\"}",
                         tag, i, name, timestamp);
        zmq_send(socks[i], msg, (size_t)n, 0);
    }
    zmq_pollitem_t *items = calloc((size_t)k, sizeof *items);
    bool *done = calloc((size_t)k, sizeof *done);
    int answered = 0, refused = 0;
    uint64_t deadline = bu_now_ns() + 60ull * 1000000000ull;
    while (answered + refused < k && bu_now_ns() < deadline) {
        for (int i = 0; i < k; i++)
            items[i] = (zmq_pollitem_t){socks[i], 0, done[i] ? 0 : ZMQ_POLLIN, 0};
        if (zmq_poll(items, k, 500) <= 0)
            continue;
        for (int i = 0; i < k; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (recv_last(socks[i], &m, ZMQ_DONTWAIT) == 0) {
                done[i] = true;
                if (is_error(zmq_msg_data(&m), zmq_msg_size(&m))) {
                    if (refused++ == 0)
                        fprintf(stderr, "loadgen: idle register refused: %.*s\n",
                                (int)zmq_msg_size(&m), (char *)zmq_msg_data(&m));
                } else {
                    answered++;
                }
            }
            zmq_msg_close(&m);
        }
    }
    free(items);
    free(done);
    if (answered < k) {
        fprintf(stderr, "loadgen: only %d of %d idle peers registered\n", answered, k);
        return -1;
    }
    return 0;
}

/* One request per client until it is answered: the service is up, and the
 * ceiling has seen the client's src. */
static int probe(client_t *clients)
{
    uint64_t deadline = bu_now_ns() + (uint64_t)(opt.ready_timeout * 1e9);
    for (int ci = 0; ci < opt.clients; ci++) {
        client_t *c = &clients[ci];
        bool ok = false;
        for (int attempt = 0; !ok && bu_now_ns() < deadline; attempt++) {
            char id[64];
            int id_len = snprintf(id, sizeof id, "%s-probe-%x-%x", tag, ci, attempt);
            size_t len = build_request(c, id, (size_t)id_len);
            zmq_send(c->sock, c->buf, len, 0);
            zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
            uint64_t until = bu_now_ns() + 300000000ull;
            while (!ok && bu_now_ns() < until) {
                long left = (long)((until - bu_now_ns()) / 1000000) + 1;
                if (zmq_poll(&item, 1, left) <= 0)
                    continue;
                zmq_msg_t m;
                zmq_msg_init(&m);
                if (recv_last(c->sock, &m, ZMQ_DONTWAIT) == 0) {
                    const char *buf = zmq_msg_data(&m), *corr;
                    size_t n = zmq_msg_size(&m), corr_len;
                    if (BU_FIND(buf, n, "\"correlation_id\":\"", &corr, &corr_len) &&
                        corr_len == (size_t)id_len && memcmp(corr, id, corr_len) == 0) {
                        if (!is_error(buf, n))
                            ok = true;
                        else
                            until = bu_now_ns() + 100000000ull; /* e.g. no_such_service yet */
                    }
                }
                zmq_msg_close(&m);
            }
        }
        if (!ok) {
            fprintf(stderr, "loadgen: %s answered no probe request to %s within %.0f s\n",
                    opt.endpoint, opt.service, opt.ready_timeout);
            return -1;
        }
    }
    return 0;
}

/* --- pacing (--rate) --- */

static uint64_t pace_start, pace_sent;

static bool pace_allows(uint64_t now)
{
    return opt.rate <= 0 || (double)pace_sent < opt.rate * (double)(now - pace_start) / 1e9;
}

/* Sends from the clients' idle slots, round-robin, as far as the rate
 * allows. Returns how many went out. */
static int pace_send(client_t *clients, uint64_t now)
{
    int sent = 0;
    bool any = true;
    while (any && pace_allows(now)) {
        any = false;
        for (int ci = 0; ci < opt.clients && pace_allows(now); ci++) {
            client_t *c = &clients[ci];
            if (c->idle_count == 0)
                continue;
            any = true;
            int si = c->idle[--c->idle_count];
            if (send_slot(c, ci, si, now) == 0) {
                pace_sent++;
                sent++;
            }
        }
    }
    return sent;
}

/* --- results --- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(const uint32_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--endpoint EP] [--clients N] [--window W] [--payload BYTES]\n"
            "          [--service S] [--action A] [--duration S] [--warmup S] [--drain-ms MS]\n"
            "          [--broker-pid PID] [--echo-pid PID] [--idle-peers K]\n"
            "          [--idle-names distinct|one] [--rate RT_PER_S] [--ready-timeout S]\n"
            "          [--label L] [--json]\n",
            argv0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && ++i)
        if (OPT("--endpoint")) opt.endpoint = v;
        else if (OPT("--clients")) opt.clients = atoi(v);
        else if (OPT("--window")) opt.window = atoi(v);
        else if (OPT("--payload")) opt.payload = atoi(v);
        else if (OPT("--service")) opt.service = v;
        else if (OPT("--action")) opt.action = v;
        else if (OPT("--duration")) opt.duration = atof(v);
        else if (OPT("--warmup")) opt.warmup = atof(v);
        else if (OPT("--drain-ms")) opt.drain_ms = atoi(v);
        else if (OPT("--broker-pid")) opt.broker_pid = atoi(v);
        else if (OPT("--echo-pid")) opt.echo_pid = atoi(v);
        else if (OPT("--idle-peers")) opt.idle_peers = atoi(v);
        else if (OPT("--idle-names")) opt.idle_names = v;
        else if (OPT("--rate")) opt.rate = atof(v);
        else if (OPT("--ready-timeout")) opt.ready_timeout = atof(v);
        else if (OPT("--label")) opt.label = v;
        else if (!strcmp(a, "--json")) opt.json = true;
        else {
            usage(argv[0]);
            return 2;
        }
#undef OPT
    }
    if (opt.clients < 1 || opt.window < 1 || opt.duration <= 0 || opt.payload < 0 ||
        opt.idle_peers < 0 || (strcmp(opt.idle_names, "one") && strcmp(opt.idle_names, "distinct"))) {
        usage(argv[0]);
        return 2;
    }
    snprintf(tag, sizeof tag, "%x%04x", (unsigned)getpid(), (unsigned)(bu_now_ns() & 0xffff));
    tag_len = strlen(tag);
    update_timestamp();

    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, opt.clients + opt.idle_peers + 64);
    void **idle = NULL;
    if (opt.idle_peers > 0 && register_idle(ctx, &idle) < 0)
        return 1;

    client_t *clients = calloc((size_t)opt.clients, sizeof *clients);
    zmq_pollitem_t *items = calloc((size_t)opt.clients, sizeof *items);
    int hwm = opt.window * 2 + 100;
    for (int ci = 0; ci < opt.clients; ci++) {
        client_t *c = &clients[ci];
        build_client(c, ci);
        c->sock = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
        if (zmq_connect(c->sock, opt.endpoint) < 0) {
            fprintf(stderr, "loadgen: cannot connect %s: %s\n", opt.endpoint, zmq_strerror(errno));
            return 1;
        }
        items[ci] = (zmq_pollitem_t){c->sock, 0, ZMQ_POLLIN, 0};
    }
    if (probe(clients) < 0)
        return 1;

    size_t lat_cap = 1 << 20, lat_n = 0;
    uint32_t *lat = malloc(lat_cap * sizeof *lat);
    uint64_t rt = 0, errors = 0, stray = 0;
    uint64_t t_start = bu_now_ns();
    uint64_t warm_end = t_start + (uint64_t)(opt.warmup * 1e9);
    uint64_t meas_end = warm_end + (uint64_t)(opt.duration * 1e9);
    uint64_t drain_end = 0, t0 = 0, t1 = 0;
    cpu_t b0 = {0}, b1 = {0}, e0 = {0}, e1 = {0};
    bool measuring = false, sending = true;
    int outstanding = 0;

    update_timestamp();
    if (opt.rate > 0) {
        for (int ci = 0; ci < opt.clients; ci++)
            for (int si = opt.window - 1; si >= 0; si--)
                clients[ci].idle[clients[ci].idle_count++] = si;
        pace_start = bu_now_ns();
        outstanding += pace_send(clients, pace_start);
    } else {
        for (int ci = 0; ci < opt.clients; ci++)
            for (int si = 0; si < opt.window; si++)
                if (send_slot(&clients[ci], ci, si, bu_now_ns()) == 0)
                    outstanding++;
    }

    zmq_msg_t m;
    zmq_msg_init(&m);
    uint64_t last_ts = bu_now_ns();
    for (;;) {
        int got = 0;
        for (int ci = 0; ci < opt.clients; ci++) {
            client_t *c = &clients[ci];
            for (int k = 0; k < 256 && recv_last(c->sock, &m, ZMQ_DONTWAIT) == 0; k++) {
                uint64_t now = bu_now_ns();
                got++;
                const char *buf = zmq_msg_data(&m), *corr;
                size_t n = zmq_msg_size(&m), corr_len;
                unsigned rci, si, seq;
                if (!BU_FIND(buf, n, "\"correlation_id\":\"", &corr, &corr_len) ||
                    !parse_corr(corr, corr_len, &rci, &si, &seq) || rci != (unsigned)ci ||
                    si >= (unsigned)opt.window || !c->slots[si].busy || c->slots[si].seq != seq) {
                    stray++;
                    continue;
                }
                slot_t *s = &c->slots[si];
                s->busy = false;
                c->outstanding--;
                outstanding--;
                if (is_error(buf, n)) {
                    if (errors++ < 3)
                        fprintf(stderr, "loadgen: error answer: %.*s\n", (int)n, buf);
                } else if (measuring) {
                    rt++;
                    uint64_t d = now - s->sent_ns;
                    if (lat_n == lat_cap) {
                        lat_cap *= 2;
                        lat = realloc(lat, lat_cap * sizeof *lat);
                    }
                    lat[lat_n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
                }
                if (!sending)
                    continue;
                if (opt.rate > 0)
                    c->idle[c->idle_count++] = (int)si;
                else if (send_slot(c, ci, (int)si, now) == 0)
                    outstanding++;
            }
        }
        uint64_t now = bu_now_ns();
        if (opt.rate > 0 && sending) {
            int n = pace_send(clients, now);
            outstanding += n;
            got += n;
        }
        if (now - last_ts > 1000000) {
            update_timestamp();
            last_ts = now;
        }
        if (!measuring && sending && now >= warm_end) {
            b0 = read_cpu(opt.broker_pid);
            e0 = read_cpu(opt.echo_pid);
            t0 = bu_now_ns();
            measuring = true;
        } else if (measuring && now >= meas_end) {
            b1 = read_cpu(opt.broker_pid);
            e1 = read_cpu(opt.echo_pid);
            t1 = bu_now_ns();
            measuring = false;
            sending = false;
            drain_end = t1 + (uint64_t)opt.drain_ms * 1000000ull;
        }
        if (!sending && (outstanding == 0 || now >= drain_end))
            break;
        if (!got) {
            uint64_t next = !sending ? drain_end : measuring ? meas_end : warm_end;
            long ms = next > now ? (long)((next - now) / 1000000) : 0;
            if (opt.rate > 0 && sending)
                ms = ms > 1 ? 1 : ms;   /* the next paced send is due soon */
            zmq_poll(items, opt.clients, ms > 100 ? 100 : ms);
        }
    }
    zmq_msg_close(&m);

    qsort(lat, lat_n, sizeof *lat, cmp_u32);
    double secs = (double)(t1 - t0) / 1e9;
    double rate = secs > 0 ? (double)rt / secs : 0;
    long hz = sysconf(_SC_CLK_TCK);
    double b_cpu = -1, b_sched = -1, b_util = -1, e_cpu = -1, e_sched = -1;
    if (b0.ok && b1.ok && rt) {
        b_cpu = (double)(b1.ticks - b0.ticks) / (double)hz * 1e6 / (double)rt;
        b_sched = (double)(b1.sched_ns - b0.sched_ns) / 1e3 / (double)rt;
        b_util = (double)(b1.sched_ns - b0.sched_ns) / 1e9 / secs;
    }
    if (e0.ok && e1.ok && rt) {
        e_cpu = (double)(e1.ticks - e0.ticks) / (double)hz * 1e6 / (double)rt;
        e_sched = (double)(e1.sched_ns - e0.sched_ns) / 1e3 / (double)rt;
    }
    size_t req_len = clients[0].last_len;
    struct {
        const char *key;
        char val[64];
    } kv[32];
    int nkv = 0;
#define KV(k, ...) (kv[nkv].key = (k), snprintf(kv[nkv].val, sizeof kv[nkv].val, __VA_ARGS__), nkv++)
    KV("label", "%s", opt.label);
    KV("clients", "%d", opt.clients);
    KV("window", "%d", opt.window);
    KV("payload", "%d", opt.payload);
    KV("request_bytes", "%zu", req_len);
    KV("idle_peers", "%d", opt.idle_peers);
    KV("rate", "%.0f", opt.rate);
    KV("duration_s", "%.3f", secs);
    KV("rt", "%" PRIu64, rt);
    KV("rt_per_s", "%.0f", rate);
    KV("p50_us", "%.1f", pct_us(lat, lat_n, 0.50));
    KV("p99_us", "%.1f", pct_us(lat, lat_n, 0.99));
    KV("p999_us", "%.1f", pct_us(lat, lat_n, 0.999));
    KV("max_us", "%.1f", lat_n ? lat[lat_n - 1] / 1000.0 : 0);
    KV("errors", "%" PRIu64, errors);
    KV("lost", "%d", outstanding);
    KV("stray", "%" PRIu64, stray);
    KV("broker_cpu_us_per_rt", "%.2f", b_cpu);
    KV("broker_sched_us_per_rt", "%.2f", b_sched);
    KV("broker_cpu_util", "%.2f", b_util);
    KV("echo_cpu_us_per_rt", "%.2f", e_cpu);
    KV("echo_sched_us_per_rt", "%.2f", e_sched);
#undef KV
    if (opt.json) {
        printf("{");
        for (int i = 0; i < nkv; i++) {
            bool str = !strcmp(kv[i].key, "label");
            printf("%s\"%s\":%s%s%s", i ? "," : "", kv[i].key, str ? "\"" : "", kv[i].val, str ? "\"" : "");
        }
        printf("}\n");
    } else {
        for (int i = 0; i < nkv; i++)
            printf("%s%s=%s", i ? " " : "", kv[i].key, kv[i].val);
        printf("\n");
    }
    fflush(stdout);

    for (int ci = 0; ci < opt.clients; ci++)
        zmq_close(clients[ci].sock);
    for (int i = 0; i < opt.idle_peers; i++)
        zmq_close(idle[i]);
    zmq_ctx_term(ctx);
    return 0;
}
