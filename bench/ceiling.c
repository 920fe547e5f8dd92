/* smartshop-ceiling: the benchmark's ceiling. A minimal ROUTER forwarder
 * that does only what the seed's broker must, so that the benchmark can say
 * how close the real broker comes to "nothing but forwarding":
 *
 *   - a message with "type":"register" maps its src to the sender's
 *     identity, and gets a short register response (so peers know it is up);
 *   - a message whose dst is "broadcast": one copy to every connection
 *     that registered a name, but the sender (the broker's T5, without
 *     its checks), so that bench/run.sh can compare the broker's fan-out
 *     with a forwarder's;
 *   - every other message: its src, if new, is mapped to the sender's
 *     identity (clients need not register), and the message is forwarded,
 *     as the very frame it came in (zero copy), to the identity its dst
 *     names. Responses go back by their dst too (the requester's src).
 *
 * Fields are found with plain byte searches ("dst":"...): no JSON parse, no
 * validation, no policy, no request tracking. Frame shapes as the broker's:
 * [id, json] or [id, "", json] in, the same shape back to each peer. Socket
 * options as the broker's (ROUTER_MANDATORY, heartbeats), but a send HWM of
 * 100000 instead of 1000: the broker answers `busy` when a peer's queue is
 * full, the ceiling could only drop, and a benchmark must lose nothing.
 * A message whose dst is unknown, or whose receiver is full or gone, is
 * dropped and counted (the broker would answer an error instead).
 *
 * Usage: smartshop-ceiling [--endpoint EP] [--send-hwm N]
 * Stops on SIGINT/SIGTERM and prints its counters on stderr. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"

#define NAME_MAX_LEN 128
#define ID_MAX_LEN 255

typedef struct {
    bool used;
    bool delimiter;             /* the peer's last message came REQ-style */
    uint8_t name_len, id_len;
    char name[NAME_MAX_LEN];
    unsigned char id[ID_MAX_LEN];
} entry_t;

static entry_t *table;
static size_t table_cap = 4096, table_count;

static entry_t *lookup(const char *name, size_t len, bool insert)
{
    size_t mask = table_cap - 1;
    for (size_t i = bu_hash(name, len) & mask;; i = (i + 1) & mask) {
        entry_t *e = &table[i];
        if (!e->used) {
            if (!insert)
                return NULL;
            e->used = true;
            e->name_len = (uint8_t)len;
            memcpy(e->name, name, len);
            table_count++;
            return e;
        }
        if (e->name_len == len && memcmp(e->name, name, len) == 0)
            return e;
    }
}

static void grow(void)
{
    entry_t *old = table;
    size_t old_cap = table_cap;
    table_cap *= 2;
    table = calloc(table_cap, sizeof *table);
    table_count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            *lookup(old[i].name, old[i].name_len, true) = old[i];
    free(old);
}

static entry_t *map(const char *name, size_t len, zmq_msg_t *id, bool delimiter)
{
    if (len == 0 || len > NAME_MAX_LEN || zmq_msg_size(id) > ID_MAX_LEN)
        return NULL;
    if (table_count * 2 >= table_cap)
        grow();
    entry_t *e = lookup(name, len, true);
    e->id_len = (uint8_t)zmq_msg_size(id);
    memcpy(e->id, zmq_msg_data(id), e->id_len);
    e->delimiter = delimiter;
    return e;
}

/* The connections that registered a name, for broadcast: copies, since
 * the name table moves when it grows. */
#define MAX_REGISTERED 4096
static struct {
    bool delimiter;
    uint8_t id_len;
    unsigned char id[ID_MAX_LEN];
} registered_peers[MAX_REGISTERED];
static size_t registered_count;

static void note_registered(const entry_t *e)
{
    for (size_t i = 0; i < registered_count; i++)
        if (registered_peers[i].id_len == e->id_len && memcmp(registered_peers[i].id, e->id, e->id_len) == 0)
            return;
    if (registered_count == MAX_REGISTERED)
        return;
    registered_peers[registered_count].delimiter = e->delimiter;
    registered_peers[registered_count].id_len = e->id_len;
    memcpy(registered_peers[registered_count].id, e->id, e->id_len);
    registered_count++;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int set_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

static bool more(void *s)
{
    int m = 0;
    size_t n = sizeof m;
    zmq_getsockopt(s, ZMQ_RCVMORE, &m, &n);
    return m != 0;
}

static int send_to(void *router, const entry_t *to, zmq_msg_t *data)
{
    if (zmq_send(router, to->id, to->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (to->delimiter && zmq_send(router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_msg_send(data, router, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *endpoint = "tcp://127.0.0.1:5555";
    int hwm = 100000;  /* the broker's is 1000, and it answers busy when full;
                          the ceiling has no error path, so it must not drop */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--endpoint") && i + 1 < argc)
            endpoint = argv[++i];
        else if (!strcmp(argv[i], "--send-hwm") && i + 1 < argc)
            hwm = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--endpoint EP] [--send-hwm N]\n", argv[0]);
            return 2;
        }
    }
    table = calloc(table_cap, sizeof *table);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    set_int(router, ZMQ_ROUTER_MANDATORY, 1);
    set_int(router, ZMQ_SNDHWM, hwm);
    set_int(router, ZMQ_HEARTBEAT_IVL, 1000);
    set_int(router, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    set_int(router, ZMQ_HEARTBEAT_TTL, 3000);
    set_int(router, ZMQ_LINGER, 0);
    /* a blocking recv in libzmq resumes after a signal: wake up now and
     * then to see the stop flag (costs nothing while messages flow) */
    set_int(router, ZMQ_RCVTIMEO, 200);
    if (zmq_bind(router, endpoint) < 0) {
        fprintf(stderr, "smartshop-ceiling: cannot bind %s: %s\n", endpoint, zmq_strerror(errno));
        return 1;
    }
    fprintf(stderr, "smartshop-ceiling: listening on %s\n", endpoint);

    uint64_t forwarded = 0, registered = 0, dropped_unknown = 0, dropped_send = 0, bad = 0;
    unsigned long reply_seq = 0;
    zmq_msg_t id, data;
    zmq_msg_init(&id);
    zmq_msg_init(&data);
    while (!stop) {
        if (zmq_msg_recv(&id, router, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            break;
        }
        if (!more(router) || zmq_msg_recv(&data, router, 0) < 0) {
            bad++;
            continue;
        }
        bool delimiter = false;
        if (zmq_msg_size(&data) == 0 && more(router)) {
            delimiter = true;
            zmq_msg_recv(&data, router, 0);
        }
        while (more(router)) {          /* not a shape the bench sends */
            zmq_msg_recv(&data, router, 0);
            bad++;
        }
        const char *buf = zmq_msg_data(&data), *src, *dst, *type;
        size_t len = zmq_msg_size(&data), src_len, dst_len, type_len;
        if (!BU_FIND(buf, len, "\"src\":\"", &src, &src_len) ||
            !BU_FIND(buf, len, "\"type\":\"", &type, &type_len)) {
            bad++;
            continue;
        }
        if (type_len == 8 && memcmp(type, "register", 8) == 0) {
            entry_t *e = map(src, src_len, &id, delimiter);
            const char *mid = "";
            size_t mid_len = 0;
            BU_FIND(buf, len, "\"msg_id\":\"", &mid, &mid_len);
            if (e) {
                char reply[1024];
                int n = snprintf(reply, sizeof reply,
                                 "{\"msg_id\":\"ceiling-%lu\",\"type\":\"response\",\"src\":\"broker\","
                                 "\"dst\":\"%.*s\",\"action\":\"register\",\"correlation_id\":\"%.*s\","
                                 "\"timestamp\":null,\"payload\":{\"status\":\"ok\",\"name\":\"%.*s\"}}",
                                 ++reply_seq, (int)src_len, src, (int)(mid_len > 128 ? 128 : mid_len),
                                 mid, (int)src_len, src);
                zmq_msg_t r;
                zmq_msg_init_size(&r, (size_t)n);
                memcpy(zmq_msg_data(&r), reply, (size_t)n);
                if (send_to(router, e, &r) < 0)
                    zmq_msg_close(&r);
                registered++;
                note_registered(e);
            }
            continue;
        }
        /* first sight of a src: remember whose it is, so answers find it */
        entry_t *from = lookup(src, src_len, false);
        if (!from)
            map(src, src_len, &id, delimiter);
        else if (from->delimiter != delimiter)
            from->delimiter = delimiter;
        if (!BU_FIND(buf, len, "\"dst\":\"", &dst, &dst_len)) {
            bad++;
            continue;
        }
        if (dst_len == 9 && memcmp(dst, "broadcast", 9) == 0) {
            for (size_t i = 0; i < registered_count; i++) {
                if (registered_peers[i].id_len == zmq_msg_size(&id) &&
                    memcmp(registered_peers[i].id, zmq_msg_data(&id), zmq_msg_size(&id)) == 0)
                    continue;           /* not back to the sender */
                entry_t to = {.delimiter = registered_peers[i].delimiter, .id_len = registered_peers[i].id_len};
                memcpy(to.id, registered_peers[i].id, to.id_len);
                zmq_msg_t copy;
                zmq_msg_init(&copy);
                zmq_msg_copy(&copy, &data);     /* a reference, as the broker's copies */
                if (send_to(router, &to, &copy) < 0) {
                    zmq_msg_close(&copy);
                    dropped_send++;
                } else {
                    forwarded++;
                }
            }
            continue;
        }
        entry_t *to = dst_len <= NAME_MAX_LEN ? lookup(dst, dst_len, false) : NULL;
        if (!to) {
            dropped_unknown++;
            continue;
        }
        if (send_to(router, to, &data) < 0) {
            dropped_send++;
            continue;
        }
        forwarded++;
    }
    fprintf(stderr,
            "smartshop-ceiling: forwarded=%llu registered=%llu dropped_unknown=%llu "
            "dropped_send=%llu bad=%llu names=%zu\n",
            (unsigned long long)forwarded, (unsigned long long)registered,
            (unsigned long long)dropped_unknown, (unsigned long long)dropped_send,
            (unsigned long long)bad, table_count);
    zmq_msg_close(&id);
    zmq_msg_close(&data);
    zmq_close(router);
    zmq_ctx_term(ctx);
    return 0;
}
