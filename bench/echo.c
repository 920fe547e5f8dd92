/* smartshop-bench-echo: the benchmark's remote echo service, in C.
 *
 * A DEALER with identity and registered name "echo-service" (--name to
 * change). Each request gets one response with a valid envelope:
 *   msg_id new, type response, src the service name, dst the request's src,
 *   action the request's action, payload the request's payload bytes as
 *   they came, correlation_id the request's msg_id, timestamp null.
 *
 * It finds the request's fields with plain byte searches, not a JSON parse.
 * That is allowed here and only here: the benchmark writes every request
 * itself (known field order, no escapes, no look-alike keys), and what
 * reaches the echo went through the broker, which validated it. The broker
 * takes bytes from anyone, so it must validate them (docs/protocol.md E1-E4);
 * see docs/performance.md.
 *
 * It answers as fast as it can with one thread and no allocation per
 * message, so that the echo is never what the benchmark measures.
 *
 * Usage: smartshop-bench-echo [--endpoint EP] [--name NAME]
 * Prints "registered" on stdout once the bus answered its register. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_util.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

#define APPEND(p, s, n) (memcpy((p), (s), (n)), (p) += (n))
#define APPEND_LIT(p, lit) APPEND(p, lit, sizeof(lit) - 1)

/* Registers and waits for the answer, sending again every 500 ms. */
static int register_name(void *sock, const char *name)
{
    for (int attempt = 0; attempt < 60 && !stop; attempt++) {
        char msg[512], mid[64];
        snprintf(mid, sizeof mid, "echo-reg-%d-%d", (int)getpid(), attempt);
        int n = snprintf(msg, sizeof msg,
                         "{\"msg_id\":\"%s\",\"type\":\"register\",\"src\":\"%s\",\"dst\":\"broker\","
                         "\"action\":\"register\",\"payload\":{},\"correlation_id\":null,"
                         "\"timestamp\":null}",
                         mid, name);
        zmq_send(sock, msg, (size_t)n, 0);
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        while (zmq_poll(&item, 1, 500) > 0) {
            char buf[4096];
            int got = zmq_recv(sock, buf, sizeof buf, 0);
            if (got <= 0)
                continue;
            size_t len = (size_t)got < sizeof buf ? (size_t)got : sizeof buf;
            const char *corr, *type;
            size_t corr_len, type_len;
            if (BU_FIND(buf, len, "\"correlation_id\":\"", &corr, &corr_len) &&
                corr_len == strlen(mid) && memcmp(corr, mid, corr_len) == 0 &&
                BU_FIND(buf, len, "\"type\":\"", &type, &type_len)) {
                if (type_len == 8 && memcmp(type, "response", 8) == 0)
                    return 0;
                fprintf(stderr, "echo: register refused: %.*s\n", (int)len, buf);
                return -1;
            }
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    const char *endpoint = "tcp://127.0.0.1:5555", *name = "echo-service";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--endpoint") && i + 1 < argc)
            endpoint = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--endpoint EP] [--name NAME]\n", argv[0]);
            return 2;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 10000, linger = 0;
    zmq_setsockopt(sock, ZMQ_IDENTITY, name, strlen(name));
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, endpoint) < 0) {
        fprintf(stderr, "echo: cannot connect %s: %s\n", endpoint, zmq_strerror(errno));
        return 1;
    }
    if (register_name(sock, name) < 0) {
        fprintf(stderr, "echo: could not register %s at %s\n", name, endpoint);
        return 1;
    }
    int timeout = 200;  /* a blocking recv resumes after a signal: see the stop flag */
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    printf("registered\n");
    fflush(stdout);

    const size_t name_len = strlen(name);
    char prefix[64];
    int prefix_len = snprintf(prefix, sizeof prefix, "e%x-", (unsigned)getpid());
    unsigned long long seq = 0, answered = 0, ignored = 0;
    zmq_msg_t in;
    zmq_msg_init(&in);
    while (!stop) {
        if (zmq_msg_recv(&in, sock, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            break;
        }
        int more = zmq_msg_more(&in);
        while (more) {                  /* ["", json]: the JSON is the last frame */
            zmq_msg_recv(&in, sock, 0);
            more = zmq_msg_more(&in);
        }
        const char *buf = zmq_msg_data(&in), *mid, *src, *type, *action = NULL;
        size_t len = zmq_msg_size(&in), mid_len, src_len, type_len, action_len = 0;
        if (!BU_FIND(buf, len, "\"type\":\"", &type, &type_len) || type_len != 7 ||
            memcmp(type, "request", 7) != 0 ||
            !BU_FIND(buf, len, "\"msg_id\":\"", &mid, &mid_len) ||
            !BU_FIND(buf, len, "\"src\":\"", &src, &src_len)) {
            ignored++;                  /* errors, events: nothing to answer */
            continue;
        }
        BU_FIND(buf, len, "\"action\":\"", &action, &action_len);
        const char *payload = "null", *payload_end;
        size_t payload_len = 4;
        const char *p = memmem(buf, len, "\"payload\":", 10);
        if (p && (payload_end = bu_skip_value(p + 10, buf + len))) {
            payload = p + 10;
            payload_len = (size_t)(payload_end - payload);
        }
        char id[48];
        int id_len = prefix_len + snprintf(id + prefix_len, sizeof id - (size_t)prefix_len, "%llx", ++seq);
        memcpy(id, prefix, (size_t)prefix_len);

        /* {"msg_id":"ID","type":"response","src":"NAME","dst":"SRC","action":"A"|null,
         *  "payload":P,"correlation_id":"MID","timestamp":null} */
        size_t out_len = 11 + (size_t)id_len + 27 + name_len + 9 + src_len +
                         (action ? 12 + action_len + 1 : 15) + 11 + payload_len + 19 + mid_len + 19;
        zmq_msg_t out;
        zmq_msg_init_size(&out, out_len);
        char *o = zmq_msg_data(&out), *start = o;
        APPEND_LIT(o, "{\"msg_id\":\"");
        APPEND(o, id, (size_t)id_len);
        APPEND_LIT(o, "\",\"type\":\"response\",\"src\":\"");
        APPEND(o, name, name_len);
        APPEND_LIT(o, "\",\"dst\":\"");
        APPEND(o, src, src_len);
        if (action) {
            APPEND_LIT(o, "\",\"action\":\"");
            APPEND(o, action, action_len);
            APPEND_LIT(o, "\"");
        } else {
            APPEND_LIT(o, "\",\"action\":null");
        }
        APPEND_LIT(o, ",\"payload\":");
        APPEND(o, payload, payload_len);
        APPEND_LIT(o, ",\"correlation_id\":\"");
        APPEND(o, mid, mid_len);
        APPEND_LIT(o, "\",\"timestamp\":null}");
        if ((size_t)(o - start) != out_len) {
            fprintf(stderr, "echo: internal length mismatch (%zu != %zu)\n", (size_t)(o - start), out_len);
            return 1;
        }
        if (zmq_msg_send(&out, sock, 0) < 0) {
            zmq_msg_close(&out);
            if (errno == EINTR)
                continue;
            break;
        }
        answered++;
    }
    fprintf(stderr, "echo: answered=%llu ignored=%llu\n", answered, ignored);
    zmq_msg_close(&in);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
