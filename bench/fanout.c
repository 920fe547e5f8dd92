/* fanout: one publisher, N subscribers of one topic, against the broker
 * (--mode bus: topic events, docs/protocol.md section 8a) or nats-server
 * (--mode nats: its text protocol, spoken here by hand: CONNECT, SUB, PUB,
 * MSG, PING/PONG). Closed loop: the publisher keeps at most --window
 * events that not every subscriber has yet. Prints one line of key=value:
 * events/s published, deliveries/s, and the server's CPU per delivery
 * (from /proc/PID/stat), for bench/run.sh and report.py.
 *
 *   smartshop-fanout --mode bus --endpoint tcp://127.0.0.1:5555 --server-pid PID
 *   smartshop-fanout --mode nats --endpoint 127.0.0.1:4222 --server-pid PID
 *   smartshop-fanout --mode broadcast --endpoint tcp://127.0.0.1:5555 --server-pid PID
 * --mode broadcast: the subscribers register names instead, and the
 * publisher sends events to "broadcast" (T5): against the broker or the
 * ceiling (bench/ceiling.c), whose fan-out is a copy per registered peer.
 * Options: --subs N (10), --size B (64), --window W (64), --warmup S (1),
 * --duration S (3), --label L. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#include <zmq.h>

#include "bench_util.h"

#define TOPIC "bench.fanout.tick"
#define MAX_SUBS 1000

static struct {
    bool nats, broadcast;
    const char *endpoint, *label;
    int subs, size, window, server_pid;
    double warmup, duration;
} opt = {.subs = 10, .size = 64, .window = 64, .warmup = 1, .duration = 3, .label = "fanout"};

static unsigned long long published, delivered;
static char payload[65536];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The seconds a process's threads have run. */
static double process_cpu_s(int pid)
{
    uint64_t ns = 0;
    return bu_sched_ns(pid, &ns) ? (double)ns / 1e9 : 0;
}

static void die(const char *what)
{
    fprintf(stderr, "fanout: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

/* --- the bus --- */

static void *zctx, *zpub, *zsub[MAX_SUBS];

static void bus_send(void *sock, const char *text)
{
    if (zmq_send(sock, text, strlen(text), 0) < 0)
        die("zmq_send");
}

/* Waits for one message on `sock` (the subscribe's answer). */
static void bus_expect(void *sock, const char *needle)
{
    char buf[256];
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 5000) <= 0)
        die("no answer from the broker");
    int n = zmq_recv(sock, buf, sizeof buf - 1, 0);
    buf[n < 0 ? 0 : (n >= (int)sizeof buf ? (int)sizeof buf - 1 : n)] = '\0';
    if (!strstr(buf, needle)) {
        fprintf(stderr, "fanout: unexpected answer: %s\n", buf);
        exit(1);
    }
}

static void bus_setup(void)
{
    zctx = zmq_ctx_new();
    int hwm = 100000;
    for (int i = 0; i <= opt.subs; i++) {
        void *s = zmq_socket(zctx, ZMQ_DEALER);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        if (zmq_connect(s, opt.endpoint) < 0)
            die("zmq_connect");
        if (i == opt.subs) {
            zpub = s;
            break;
        }
        zsub[i] = s;
        char msg[1024];
        if (opt.broadcast)
            snprintf(msg, sizeof msg,
                     "{\"msg_id\":\"reg-%d\",\"type\":\"register\",\"src\":\"fan-sub-%d\",\"dst\":\"broker\","
                     "\"action\":\"register\",\"payload\":{}}", i, i);
        else
            snprintf(msg, sizeof msg,
                     "{\"msg_id\":\"sub-%d\",\"type\":\"request\",\"src\":\"fan-sub-%d\",\"dst\":\"broker\","
                     "\"action\":\"subscribe\",\"payload\":{\"topic\":\"bench.fanout.*\"}}", i, i);
        bus_send(s, msg);
        bus_expect(s, "\"status\":\"ok\"");
    }
}

static void bus_publish(void)
{
    char msg[70000];
    int n = opt.broadcast
        ? snprintf(msg, sizeof msg,
                   "{\"msg_id\":\"ev-%llu\",\"type\":\"event\",\"src\":\"fan-pub\",\"dst\":\"broadcast\","
                   "\"action\":\"tick\",\"payload\":\"%s\"}", published, payload)
        : snprintf(msg, sizeof msg,
                   "{\"msg_id\":\"ev-%llu\",\"type\":\"event\",\"src\":\"fan-pub\",\"dst\":null,"
                   "\"action\":\"tick\",\"payload\":\"%s\",\"topic\":\"" TOPIC "\"}",
                   published, payload);
    if (zmq_send(zpub, msg, (size_t)n, 0) < 0)
        die("zmq_send");
    published++;
}

/* Reads what every subscriber has; waits up to `ms` for the first. */
static void bus_drain(int ms)
{
    zmq_pollitem_t items[MAX_SUBS];
    for (int i = 0; i < opt.subs; i++)
        items[i] = (zmq_pollitem_t){zsub[i], 0, ZMQ_POLLIN, 0};
    if (zmq_poll(items, opt.subs, ms) <= 0)
        return;
    char buf[70000];
    for (int i = 0; i < opt.subs; i++)
        while (zmq_recv(zsub[i], buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            delivered++;
}

/* --- NATS, by its text protocol --- */

static int npub, nsub[MAX_SUBS];
static struct { char buf[1 << 16]; size_t len; } nin[MAX_SUBS];

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

/* Reads until `needle` was seen (INFO, PONG). */
static void read_until(int fd, const char *needle)
{
    char buf[8192];
    size_t have = 0;
    while (have < sizeof buf - 1) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            die("read from nats-server");
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, needle))
            return;
    }
    die("no answer from nats-server");
}

static int nats_open(void)
{
    int fd = tcp_connect();
    read_until(fd, "INFO");
    const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n";
    write_all(fd, hello, strlen(hello));
    return fd;
}

static void nats_setup(void)
{
    for (int i = 0; i < opt.subs; i++) {
        nsub[i] = nats_open();
        const char *sub = "SUB bench.fanout.* 1\r\nPING\r\n";
        write_all(nsub[i], sub, strlen(sub));
        read_until(nsub[i], "PONG");
    }
    npub = nats_open();
}

static void nats_publish(void)
{
    char head[128];
    int n = snprintf(head, sizeof head, "PUB " TOPIC " %d\r\n", opt.size);
    static char msg[70000];
    memcpy(msg, head, (size_t)n);
    memcpy(msg + n, payload, (size_t)opt.size);
    memcpy(msg + n + opt.size, "\r\n", 2);
    write_all(npub, msg, (size_t)n + (size_t)opt.size + 2);
    published++;
}

/* Counts whole MSG frames in subscriber i's buffer; answers PINGs. */
static void nats_parse(int i)
{
    char *b = nin[i].buf;
    size_t pos = 0;
    for (;;) {
        char *eol = memchr(b + pos, '\n', nin[i].len - pos);
        if (!eol)
            break;
        size_t line = (size_t)(eol - (b + pos)) + 1;
        if (strncmp(b + pos, "MSG ", 4) == 0) {
            char *last = eol;
            while (last > b + pos && last[-1] != ' ')
                last--;
            size_t len = strtoul(last, NULL, 10);
            if (pos + line + len + 2 > nin[i].len)
                break;                      /* the payload is not all here yet */
            pos += line + len + 2;
            delivered++;
        } else {
            if (strncmp(b + pos, "PING", 4) == 0)
                write_all(nsub[i], "PONG\r\n", 6);
            pos += line;
        }
    }
    memmove(b, b + pos, nin[i].len - pos);
    nin[i].len -= pos;
}

static void nats_drain(int ms)
{
    struct pollfd fds[MAX_SUBS];
    for (int i = 0; i < opt.subs; i++)
        fds[i] = (struct pollfd){nsub[i], POLLIN, 0};
    if (poll(fds, (nfds_t)opt.subs, ms) <= 0)
        return;
    for (int i = 0; i < opt.subs; i++) {
        if (!(fds[i].revents & POLLIN))
            continue;
        ssize_t n = read(nsub[i], nin[i].buf + nin[i].len, sizeof nin[i].buf - nin[i].len);
        if (n <= 0)
            die("read from nats-server");
        nin[i].len += (size_t)n;
        nats_parse(i);
    }
}

/* --- the loop --- */

static void run_for(double seconds)
{
    double end = now_s() + seconds;
    while (now_s() < end) {
        while (published < (unsigned long long)opt.window ||
               delivered >= (published - (unsigned long long)opt.window) * (unsigned long long)opt.subs) {
            opt.nats ? nats_publish() : bus_publish();
            if (published % 16 == 0)
                break;                      /* let the subscribers read */
        }
        opt.nats ? nats_drain(1) : bus_drain(1);
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, 0, 'm'},     {"endpoint", required_argument, 0, 'e'},
        {"subs", required_argument, 0, 'n'},     {"size", required_argument, 0, 's'},
        {"window", required_argument, 0, 'w'},   {"warmup", required_argument, 0, 'W'},
        {"duration", required_argument, 0, 'd'}, {"server-pid", required_argument, 0, 'p'},
        {"label", required_argument, 0, 'l'},    {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            opt.nats = strcmp(optarg, "nats") == 0;
            opt.broadcast = strcmp(optarg, "broadcast") == 0;
            break;
        case 'e': opt.endpoint = optarg; break;
        case 'n': opt.subs = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'p': opt.server_pid = atoi(optarg); break;
        case 'l': opt.label = optarg; break;
        default: fprintf(stderr, "fanout: see the comment at the top of bench/fanout.c\n"); return 2;
        }
    }
    if (!opt.endpoint || opt.subs < 1 || opt.subs > MAX_SUBS || opt.size < 1 ||
        opt.size > (int)sizeof payload - 1 || opt.window < 1) {
        fprintf(stderr, "fanout: needs --endpoint, 1 <= --subs <= %d, 1 <= --size <= 65535\n", MAX_SUBS);
        return 2;
    }
    memset(payload, 'x', (size_t)opt.size);
    payload[opt.size] = '\0';
    opt.nats ? nats_setup() : bus_setup();
    run_for(opt.warmup);
    unsigned long long pub0 = published, del0 = delivered;
    double cpu0 = process_cpu_s(opt.server_pid), t0 = now_s();
    run_for(opt.duration);
    double cpu1 = process_cpu_s(opt.server_pid), t1 = now_s();
    unsigned long long pubs = published - pub0, dels = delivered - del0;
    double secs = t1 - t0;
    printf("label=%s mode=%s subs=%d size=%d events_per_s=%.0f deliveries_per_s=%.0f "
           "server_cpu_us_per_delivery=%.3f\n",
           opt.label, opt.nats ? "nats" : opt.broadcast ? "broadcast" : "bus", opt.subs, opt.size, pubs / secs, dels / secs,
           dels ? (cpu1 - cpu0) * 1e6 / (double)dels : 0.0);
    return dels ? 0 : 1;
}
