/* broker: the ROUTER socket, its connection monitor, signals and the event
 * loop. Knows nothing of envelopes: every message goes to router.c. */
#include "broker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"
#include "log.h"
#include "router.h"
#include "wire.h"

#define MONITOR_ENDPOINT "inproc://smartshop-router-monitor"
/* Messages handled between two looks at connection events and timers. */
#define BATCH 64

static int set_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

/* "tcp://127.0.0.1:5555" -> a hint naming the port, for bind errors. */
static void bind_hint(const char *endpoint, char *out, size_t cap)
{
    const char *colon = strrchr(endpoint, ':');
    if (strncmp(endpoint, "tcp://", 6) == 0 && colon)
        snprintf(out, cap, " (find who holds it: ss -ltnp 'sport = :%s')", colon + 1);
    else if (strncmp(endpoint, "ipc://", 6) == 0)
        snprintf(out, cap, " (is another broker using %s? remove the file if not)", endpoint + 6);
    else
        out[0] = '\0';
}

static int configure_router(broker_t *b, char *err, size_t errlen)
{
    const config_t *cfg = b->cfg;
    int64_t max_size = (int64_t)cfg->max_message_bytes * 4 + 65536;
    /* Larger-than-allowed messages up to 4x the limit are read and answered
     * too_large; past that libzmq drops the connection rather than buffer
     * without end (docs/protocol.md E2). */
    if (set_int(b->router, ZMQ_ROUTER_MANDATORY, 1) < 0 ||
        set_int(b->router, ZMQ_SNDHWM, cfg->send_hwm) < 0 ||
        set_int(b->router, ZMQ_HEARTBEAT_IVL, cfg->heartbeat_ivl_ms) < 0 ||
        set_int(b->router, ZMQ_HEARTBEAT_TIMEOUT, cfg->heartbeat_timeout_ms) < 0 ||
        set_int(b->router, ZMQ_HEARTBEAT_TTL, cfg->heartbeat_timeout_ms) < 0 ||
        set_int(b->router, ZMQ_LINGER, 1000) < 0 ||
        zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &max_size, sizeof max_size) < 0) {
        snprintf(err, errlen, "cannot configure the ROUTER socket: %s", zmq_strerror(errno));
        return -1;
    }
    if (zmq_socket_monitor(b->router, MONITOR_ENDPOINT, ZMQ_EVENT_DISCONNECTED) < 0 ||
        !(b->monitor = zmq_socket(b->zmq_ctx, ZMQ_PAIR)) ||
        zmq_connect(b->monitor, MONITOR_ENDPOINT) < 0) {
        snprintf(err, errlen, "cannot monitor the ROUTER socket: %s", zmq_strerror(errno));
        return -1;
    }
    for (int i = 0; i < cfg->endpoint_count; i++) {
        if (zmq_bind(b->router, cfg->endpoints[i]) < 0) {
            char hint[160];
            int why = errno;
            bind_hint(cfg->endpoints[i], hint, sizeof hint);
            snprintf(err, errlen, "cannot bind %s: %s%s", cfg->endpoints[i], zmq_strerror(why),
                     why == EADDRINUSE ? hint : "");
            return -1;
        }
    }
    return 0;
}

static int open_signal_fd(char *err, size_t errlen)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        snprintf(err, errlen, "cannot watch signals: %s", strerror(errno));
    return fd;
}

broker_t *broker_new(const config_t *cfg, char *err, size_t errlen)
{
    broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = cfg;
    b->signal_fd = -1;
    b->started_ms = clock_ms();
    b->registry = registry_new();
    b->inflight = inflight_table_new(cfg->max_inflight);
    b->zmq_ctx = zmq_ctx_new();
    if (!b->registry || !b->inflight || !b->zmq_ctx) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->router = zmq_socket(b->zmq_ctx, ZMQ_ROUTER);
    if (!b->router) {
        snprintf(err, errlen, "cannot create the ROUTER socket: %s", zmq_strerror(errno));
        goto fail;
    }
    if (configure_router(b, err, errlen) < 0)
        goto fail;
    if ((b->signal_fd = open_signal_fd(err, errlen)) < 0)
        goto fail;
    return b;
fail:
    broker_free(&b);
    return NULL;
}

void broker_free(broker_t **self_p)
{
    broker_t *b = *self_p;
    if (!b)
        return;
    if (b->monitor) {
        zmq_socket_monitor(b->router, NULL, 0);
        zmq_close(b->monitor);
    }
    if (b->router)
        zmq_close(b->router);
    if (b->zmq_ctx)
        zmq_ctx_term(b->zmq_ctx);
    if (b->signal_fd >= 0)
        close(b->signal_fd);
    inflight_table_free(&b->inflight);
    registry_free(&b->registry);
    free(b);
    *self_p = NULL;
}

/* Handles every connection event waiting: a disconnect drops its peer.
 * Runs before each batch of messages, so that a descriptor's number is
 * never taken for a newer connection's. */
static void drain_monitor(broker_t *b)
{
    for (;;) {
        zmq_msg_t event, address;
        zmq_msg_init(&event);
        if (zmq_msg_recv(&event, b->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&event);
            return;
        }
        uint16_t id = 0;
        int32_t value = -1;
        if (zmq_msg_size(&event) >= 6) {
            memcpy(&id, zmq_msg_data(&event), sizeof id);
            memcpy(&value, (char *)zmq_msg_data(&event) + 2, sizeof value);
        }
        zmq_msg_close(&event);
        zmq_msg_init(&address);           /* second frame: the endpoint */
        zmq_msg_recv(&address, b->monitor, 0);
        zmq_msg_close(&address);
        if (id != ZMQ_EVENT_DISCONNECTED || registry_fd_take_stale(b->registry, value))
            continue;
        peer_t *peer = registry_peer_on_fd(b->registry, value);
        if (peer)
            router_peer_gone(b, peer);
    }
}

static void begin_stop(broker_t *b, const char *signal_name)
{
    if (b->stopping) {
        log_info("%s again: stopping now", signal_name);
        b->stop_deadline_ms = 0;
        return;
    }
    b->stopping = true;
    b->stop_deadline_ms = clock_ms() + b->cfg->shutdown_grace_ms;
    log_info("%s: stopping; %zu request(s) in flight get up to %u ms", signal_name,
             b->inflight->count, b->cfg->shutdown_grace_ms);
    /* Stop accepting connections; the ones open keep their traffic. */
    for (int i = 0; i < b->cfg->endpoint_count; i++)
        zmq_unbind(b->router, b->cfg->endpoints[i]);
}

static void handle_signals(broker_t *b)
{
    struct signalfd_siginfo info;
    while (read(b->signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
        switch (info.ssi_signo) {
        case SIGINT: begin_stop(b, "SIGINT"); break;
        case SIGTERM: begin_stop(b, "SIGTERM"); break;
        case SIGHUP: log_info("SIGHUP: nothing to reload yet"); break;
        default: break;
        }
    }
}

/* How long the loop may sleep: until the next deadline, at most 1 s. */
static long poll_timeout(broker_t *b, uint64_t now)
{
    uint64_t next = inflight_next_deadline(b->inflight);
    if (b->stopping && b->stop_deadline_ms < next)
        next = b->stop_deadline_ms;
    if (next <= now)
        return 0;
    return next - now > 1000 ? 1000 : (long)(next - now);
}

int broker_run(broker_t *b)
{
    char endpoints[512] = "";
    for (int i = 0; i < b->cfg->endpoint_count; i++) {
        size_t used = strlen(endpoints);
        snprintf(endpoints + used, sizeof endpoints - used, "%s%s", i ? " " : "", b->cfg->endpoints[i]);
    }
    log_info("ready: listening on %s", endpoints);

    zmq_pollitem_t items[] = {
        {b->monitor, 0, ZMQ_POLLIN, 0},
        {b->router, 0, ZMQ_POLLIN, 0},
        {NULL, b->signal_fd, ZMQ_POLLIN, 0},
    };
    for (;;) {
        uint64_t now = clock_ms();
        if (b->stopping && (b->inflight->count == 0 || now >= b->stop_deadline_ms))
            break;
        if (zmq_poll(items, 3, poll_timeout(b, now)) < 0 && errno != EINTR) {
            log_error("poll failed: %s", zmq_strerror(errno));
            return 1;
        }
        if (items[2].revents)
            handle_signals(b);
        drain_monitor(b);
        if (items[1].revents) {
            for (int i = 0; i < BATCH; i++) {
                wire_msg_t m;
                if (wire_recv(b->router, &m) < 0)
                    break;
                router_handle(b, &m);
                wire_msg_close(&m);
            }
        }
        router_expire(b, clock_ms());
    }
    if (b->inflight->count > 0)
        log_info("grace period over: answering %zu request(s) shutting_down", b->inflight->count);
    router_fail_all(b, ERR_SHUTTING_DOWN, "the broker stopped before this request was answered");
    log_info("stopped");
    return 0;
}
