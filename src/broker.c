/* broker: the ROUTER socket, its connection monitor, signals and the event
 * loop. Knows nothing of envelopes: every message goes to router.c. */
#include "broker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <zmq.h>

#include <libgen.h>

#include <systemd/sd-daemon.h>

#include "broker_service.h"
#include "bus.h"
#include "clock.h"
#include "conn_bytes.h"
#include "inflight.h"
#include "log.h"
#include "http.h"
#include "policy.h"
#include "router.h"
#include "deadletter.h"
#include "state.h"
#include "state_keepers.h"
#include "services.h"
#include "watch.h"
#include "wire.h"

#define MONITOR_ENDPOINT "inproc://smartshop-router-monitor"
/* Messages read per wake-up at most (then timers, signals and files get
 * their turn): reading until the socket is empty saves a poll() per few
 * messages under load. */
#define BATCH_MAX 1024
/* Messages read, then all their envelopes read, then all handled, at a
 * time; connection events are looked at between groups, every GROUP_MAX
 * messages. Reading every
 * envelope first brings a group's sends close together: libzmq's I/O
 * thread then finds several messages per wake-up instead of being woken
 * for each (an eventfd write, an epoll round, a context switch). Measured:
 * 10 % more round trips a second and 12 % less CPU per round trip at
 * 4 x 64 (docs/performance.md). */
#define GROUP_MAX 64
/* How often every connection's byte counts are looked at (conn_bytes.h):
 * how long a connection may stream a message that never ends before it is
 * seen, against one getsockopt per connection per check. */
#define CONN_CHECK_MS 100
/* At a stop, how long the socket must be quiet before the broker exits,
 * and how long after the grace period it waits for that at most. */
#define STOP_QUIET_MS 100
#define STOP_QUIET_MAX_MS 1000

struct broker {
    config_t *cfg;              /* main's; its live settings change on reload */
    void *zmq_ctx;
    void *socket;               /* the ROUTER socket all peers talk to */
    uint64_t socket_sends;      /* messages sent on it (the loop's wake-up rule, broker_run) */
    void *monitor;              /* PAIR socket receiving the ROUTER's connection events */
    conn_bytes_t *conns;        /* bytes per connection, in and out (conn_bytes.h) */
    int signal_fd;              /* SIGINT, SIGTERM, SIGHUP (signalfd) */
    auth_t *auth;               /* NULL in plain mode (not owned) */
    router_t *router;           /* the message path and the bus's state */
    http_server_t *http;        /* the --metrics endpoint's thread, or NULL */
    broker_service_t *service;  /* dst "broker" */
    bool stopping;              /* SIGTERM/SIGINT seen: grace period running */
    uint64_t stop_deadline_ms;
    policy_t *policy;           /* NULL when running without a policy file */
    services_t *services;       /* NULL when running without a services directory */
    watch_t *watch;             /* the policy's and services' directories, for live reload */
    int policy_watch, services_watch; /* their indexes in `watch`, -1 if not watched */
    uint64_t policy_reload_due; /* when a change seen on disk is reloaded (0: none) */
    bus_t *bus;                 /* the other brokers over NATS (--nats), or NULL */
    state_t *state;             /* the durable state (state.h), or NULL */
    registry_keeper_t registry_keeper;   /* the registry's and the dead letters' */
    deadletters_keeper_t letters_keeper; /* writes into it */
    uint64_t restore_due;       /* when restored registrations not back are settled (0: none) */
    uint64_t last_read_ms;      /* when the ROUTER last gave a message (the stop's quiet rule) */
};

/* The router's transport: the ROUTER socket, within the byte bounds of
 * conn_bytes.h (past the peer's share or the total, the peer is full
 * until its kernel says it took some). */
static int send_on_socket(void *ctx, peer_t *to, zmq_msg_t *data)
{
    broker_t *b = ctx;
    uint64_t bytes = conn_bytes_wire_size(zmq_msg_size(data), to->delimiter, b->auth != NULL);
    if (!conn_bytes_fits(b->conns, to, bytes) && !conn_bytes_recheck(b->conns, to, bytes)) {
        errno = EAGAIN;
        return -1;
    }
    b->socket_sends++;
    if (wire_send(b->socket, to, data) < 0)
        return -1;
    conn_bytes_sent(b->conns, to, bytes);
    return 0;
}

static int send_back_on_socket(void *ctx, wire_msg_t *m, zmq_msg_t *data)
{
    broker_t *b = ctx;
    return wire_send_back(b->socket, m, data);
}

static uint64_t now_us(void)
{
    return clock_us();
}

/* The services the router hosts, as router_hosts_t wants them. */
static int enqueue_for_service(void *ctx, peer_t *to, zmq_msg_t *data, const envelope_t *env)
{
    return services_enqueue(ctx, to, data, env);
}

static void broker_request(void *ctx, peer_t *from, const envelope_t *env)
{
    broker_service_handle(ctx, from, env);
}

static int reload_for_service(void *ctx, char *err, size_t errlen)
{
    return broker_reload_policy(ctx, err, errlen);
}

static int reload_config_for_service(void *ctx, char *live, size_t livelen, char *fixed,
                                     size_t fixedlen, char *err, size_t errlen)
{
    return broker_reload_config(ctx, live, livelen, fixed, fixedlen, err, errlen);
}

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
    /* Messages over the limit are still read, so that they can be answered
     * too_large; only past this ceiling (4x the limit, at least 16 MiB) does
     * libzmq drop the connection instead of buffering without end
     * (docs/protocol.md E2). */
    int64_t max_size = (int64_t)cfg->max_message_bytes * 4;
    if (max_size < (16 << 20))
        max_size = 16 << 20;
    if (set_int(b->socket, ZMQ_ROUTER_MANDATORY, 1) < 0 ||
        set_int(b->socket, ZMQ_SNDHWM, cfg->send_hwm) < 0 ||
        set_int(b->socket, ZMQ_HEARTBEAT_IVL, cfg->heartbeat_ivl_ms) < 0 ||
        set_int(b->socket, ZMQ_HEARTBEAT_TIMEOUT, cfg->heartbeat_timeout_ms) < 0 ||
        set_int(b->socket, ZMQ_HEARTBEAT_TTL, cfg->heartbeat_timeout_ms) < 0 ||
        set_int(b->socket, ZMQ_LINGER, 1000) < 0 ||
        zmq_setsockopt(b->socket, ZMQ_MAXMSGSIZE, &max_size, sizeof max_size) < 0) {
        snprintf(err, errlen, "cannot configure the ROUTER socket: %s", zmq_strerror(errno));
        return -1;
    }
    /* accepted and gone: which descriptors are connections (conn_bytes.h) */
    if (zmq_socket_monitor(b->socket, MONITOR_ENDPOINT,
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) < 0 ||
        !(b->monitor = zmq_socket(b->zmq_ctx, ZMQ_PAIR)) ||
        zmq_connect(b->monitor, MONITOR_ENDPOINT) < 0) {
        snprintf(err, errlen, "cannot monitor the ROUTER socket: %s", zmq_strerror(errno));
        return -1;
    }
    for (int i = 0; i < cfg->endpoint_count; i++) {
        if (zmq_bind(b->socket, cfg->endpoints[i]) < 0) {
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

static void log_policy_loaded(const broker_t *b)
{
    char hooks[128];
    policy_describe_hooks(b->policy, hooks, sizeof hooks);
    log_info("policy %s loaded (hooks: %s)", policy_path(b->policy), hooks);
}

/* The limits every Lua state gets, policy and services alike. */
static sandbox_limits_t lua_limits(const config_t *cfg)
{
    return (sandbox_limits_t){cfg->lua_memory_limit, (long)cfg->lua_instruction_limit};
}

int broker_reload_policy(broker_t *b, char *err, size_t errlen)
{
    if (!b->policy) {
        snprintf(err, errlen, "the broker runs without a policy file (--policy)");
        return -1;
    }
    sd_notify(0, "RELOADING=1");
    int rc = policy_load(b->policy, err, errlen);
    sd_notify(0, "READY=1");
    if (rc < 0) {
        log_error("policy refused, the previous version keeps running: %s", err);
        return -1;
    }
    log_policy_loaded(b);
    return 0;
}

/* Loads the policy (a broken one stops the start: exit 2 is clearer than
 * a broker routing without the rules its operator wrote) and watches its
 * directory, so that saving the file reloads it. A policy file that does
 * not exist yet is loaded when it appears. */
static int start_policy(broker_t *b, char *err, size_t errlen)
{
    b->policy = policy_new(b->cfg->policy_path, lua_limits(b->cfg), router_registry(b->router));
    if (!b->policy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    router_set_policy(b->router, b->policy);
    char *copy = strdup(b->cfg->policy_path);
    if (!copy || (b->policy_watch = watch_add_dir(b->watch, dirname(copy))) < 0)
        log_warn("cannot watch %s for changes (%s): reload with SIGHUP", b->cfg->policy_path,
                 strerror(errno));
    free(copy);
    if (access(b->cfg->policy_path, F_OK) != 0)
        return 0;
    /* a file that does not load: its last good version, unless --strict-policy */
    int rc = policy_start(b->policy, b->state, b->cfg->strict_policy, err, errlen);
    if (rc < 0)
        return -1;                  /* main says it once, and exits 2 */
    if (rc == 0)
        log_policy_loaded(b);
    return 0;
}

/* Loads the Lua services and watches their directory, so that adding,
 * editing or deleting a file adds, reloads or drops a service. */
static int start_services(broker_t *b, char *err, size_t errlen)
{
    b->services = services_new(b->router, b->cfg->services_dir, lua_limits(b->cfg),
                               (uint32_t)b->cfg->send_hwm, (uint32_t)b->cfg->request_timeout_ms);
    if (!b->services) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    router_set_hosts(b->router, (router_hosts_t){.lua_ctx = b->services,
                                                 .enqueue = enqueue_for_service,
                                                 .broker_ctx = b->service,
                                                 .broker_request = broker_request});
    if ((b->services_watch = watch_add_dir(b->watch, b->cfg->services_dir)) < 0)
        log_warn("cannot watch %s for changes (%s): services load at start only",
                 b->cfg->services_dir, strerror(errno));
    int loaded = services_load_all(b->services);
    log_info("%d Lua service(s) loaded from %s", loaded, b->cfg->services_dir);
    return 0;
}

/* A file changed in a watched directory: the policy reloads shortly
 * (editors write in steps; one reload covers them all); a service file
 * goes to the services host. */
static void on_file_changed(void *ctx, int dir_index, const char *name)
{
    broker_t *b = ctx;
    if (dir_index == b->services_watch && b->services)
        services_file_changed(b->services, name);
    if (dir_index != b->policy_watch || !b->policy)
        return;
    char *copy = strdup(policy_path(b->policy));
    if (copy && strcmp(basename(copy), name) == 0 && !b->policy_reload_due)
        b->policy_reload_due = clock_ms() + 100;
    free(copy);
}

static void reload_if_due(broker_t *b, uint64_t now)
{
    if (!b->policy_reload_due || now < b->policy_reload_due)
        return;
    b->policy_reload_due = 0;
    if (access(policy_path(b->policy), F_OK) != 0) {
        log_warn("policy %s was removed; the loaded version keeps running", policy_path(b->policy));
        return;
    }
    char err[512];
    broker_reload_policy(b, err, sizeof err);
}

/* A registration read back from the state file, if it still holds: under
 * CURVE only a key the allow list still lets register the name, in plain
 * mode only a keyless one (the mode changed: its peers will register
 * again). What does not hold is dropped from the file too. */
static void restore_registration(void *ctx, const state_registration_t *row)
{
    broker_t *b = ctx;
    registry_t *reg = router_registry(b->router);
    bool holds = b->auth ? *row->key && auth_may_register(b->auth, row->key, row->name) : !*row->key;
    if (!holds || !registry_restore(reg, row->identity, row->identity_len, row->key,
                                    row->delimiter, row->name))
        state_del_registration(b->state, row->identity, row->identity_len, row->name);
}

static void restore_letter(void *ctx, const state_letter_t *row)
{
    deadletters_restore(ctx, row);
}

/* The durable state: opened before anything can change it, read back into
 * the router's tables, then written behind. One that cannot be opened at
 * all is reported, and the broker runs without it. */
static void start_state(broker_t *b)
{
    const char *dir = b->cfg->state_dir;
    if (!dir || !*dir) {
        log_warn("no state directory (--state-dir \"\"): a restart loses the registrations, "
                 "the dead letters and the last good policy");
        return;
    }
    char err[512];
    if (!(b->state = state_open(dir, err, sizeof err))) {
        log_error("state: %s; running without a durable state", err);
        return;
    }
    registry_t *reg = router_registry(b->router);
    b->registry_keeper = state_registry_keeper(b->state);
    b->letters_keeper = state_letters_keeper(b->state);
    registry_set_keeper(reg, &b->registry_keeper);
    deadletters_set_keeper(router_dead(b->router), &b->letters_keeper);
    int names = state_load_registrations(b->state, restore_registration, b);
    int letters = state_load_letters(b->state, restore_letter, router_dead(b->router));
    state_start(b->state);
    size_t restored = registry_restored_count(reg);
    if (strcmp(state_origin(b->state), "restored") != 0)
        log_warn("state %s: %s; starting empty", state_path(b->state),
                 strcmp(state_origin(b->state), "new") == 0 ? "no state file yet"
                                                           : "the file could not be read");
    else
        log_info("state %s: restored %d registration(s) of %zu peer(s) (routable as they "
                 "reconnect, dropped after %u ms if not), %d dead letter(s)",
                 state_path(b->state), names < 0 ? 0 : names, restored,
                 b->cfg->restore_grace_ms, letters < 0 ? 0 : letters);
    if (restored)
        b->restore_due = clock_ms() + b->cfg->restore_grace_ms;
}

broker_t *broker_new(config_t *cfg, auth_t *auth, char *err, size_t errlen,
                     int *exit_code)
{
    *exit_code = 1;
    broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = cfg;
    b->auth = auth;
    b->signal_fd = -1;
    b->policy_watch = b->services_watch = -1;
    b->zmq_ctx = zmq_ctx_new();
    b->watch = watch_new();
    conn_bytes_limits_t byte_limits = {
        .max_unread = cfg->max_unread_bytes, .max_unread_total = cfg->max_unread_bytes_total,
        .max_queued = cfg->max_queued_bytes, .max_queued_total = cfg->max_queued_bytes_total,
        .reserve = conn_bytes_wire_size(cfg->max_message_bytes, true, true),
        .check_ms = CONN_CHECK_MS, .heartbeat_ivl_ms = (unsigned)cfg->heartbeat_ivl_ms};
    b->conns = conn_bytes_new(&byte_limits);
    b->router = router_new(cfg, auth,
                           (router_transport_t){b, send_on_socket, send_back_on_socket}, now_us);
    b->service = b->router ? broker_service_new(b->router, reload_for_service, b) : NULL;
    if (!b->router || !b->service || !b->zmq_ctx || !b->watch || !b->conns) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    router_set_hosts(b->router, (router_hosts_t){.broker_ctx = b->service,
                                                 .broker_request = broker_request});
    b->socket = zmq_socket(b->zmq_ctx, ZMQ_ROUTER);
    if (!b->socket) {
        snprintf(err, errlen, "cannot create the ROUTER socket: %s", zmq_strerror(errno));
        goto fail;
    }
    if (b->auth && auth_start(b->auth, b->zmq_ctx, b->socket, err, errlen) < 0)
        goto fail;
    if (configure_router(b, err, errlen) < 0)
        goto fail;
    if ((b->signal_fd = open_signal_fd(err, errlen)) < 0)
        goto fail;
    if (*cfg->metrics_endpoint && !(b->http = http_start(cfg, err, errlen)))
        goto fail;
    start_state(b);
    broker_service_set_state(b->service, b->state);
    broker_service_set_config_reload(b->service, reload_config_for_service, b);
    if (cfg->policy_path && *cfg->policy_path && start_policy(b, err, errlen) < 0) {
        *exit_code = 2;
        goto fail;
    }
    /* before the services: the names they register are offered on it */
    if (*cfg->nats_urls && !(b->bus = bus_new(b->router, cfg, err, errlen)))
        goto fail;
    if (cfg->services_dir && *cfg->services_dir && start_services(b, err, errlen) < 0)
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
    services_free(&b->services);        /* may still answer peers: before the socket closes */
    bus_free(&b->bus);
    if (b->auth)
        auth_stop(b->auth);
    if (b->monitor) {
        zmq_socket_monitor(b->socket, NULL, 0);
        zmq_close(b->monitor);
    }
    http_stop(&b->http);                /* before the router its snapshots come from */
    if (b->socket)
        zmq_close(b->socket);
    if (b->zmq_ctx)
        zmq_ctx_term(b->zmq_ctx);
    if (b->signal_fd >= 0)
        close(b->signal_fd);
    broker_service_free(&b->service);
    if (b->router) {                    /* what is freed now stays in the file */
        registry_set_keeper(router_registry(b->router), NULL);
        deadletters_set_keeper(router_dead(b->router), NULL);
    }
    router_free(&b->router);            /* its requests point at the metrics' series */
    policy_free(&b->policy);
    watch_free(&b->watch);
    conn_bytes_free(&b->conns);
    state_close(&b->state, 5000);       /* writes what is queued */
    free(b);
    *self_p = NULL;
}

/* Handles every connection event waiting: a disconnect drops its peer.
 * Runs, when poll says events wait, before the batch of messages that
 * follows, so that a descriptor's number is never taken for a newer
 * connection's (and registry_fd_mark_stale covers events that arrive mid-batch). */
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
        if (id == ZMQ_EVENT_ACCEPTED) {
            conn_bytes_accepted(b->conns, value);
            continue;
        }
        if (id != ZMQ_EVENT_DISCONNECTED)
            continue;
        conn_bytes_closed(b->conns, value);
        if (registry_fd_take_stale(router_registry(b->router), value))
            continue;
        peer_t *peer = registry_peer_on_fd(router_registry(b->router), value);
        if (peer)
            router_peer_gone(b->router, peer);
    }
}

/* Whether a ZeroMQ socket has a message waiting (ZMQ_EVENTS). */
static bool socket_readable(void *socket)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt(socket, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN);
}

/* D5: the loop ends once nothing is in flight and no message came for
 * STOP_QUIET_MS (a requester whose answer just went out may be sending
 * its next request: it gets shutting_down rather than silence), or once
 * the grace period is over and the socket is as quiet; at the latest
 * STOP_QUIET_MAX_MS after the grace period. */
static bool stop_now(broker_t *b, uint64_t now)
{
    bool quiet = now >= b->last_read_ms + STOP_QUIET_MS;
    if (now >= b->stop_deadline_ms + STOP_QUIET_MAX_MS)
        return true;
    if (now >= b->stop_deadline_ms && router_inflight_count(b->router) > 0) {
        log_info("grace period over: answering %zu request(s) shutting_down",
                 router_inflight_count(b->router));
        router_fail_all(b->router, ERR_SHUTTING_DOWN,
                        "the broker stopped before this request was answered");
    }
    return quiet && router_inflight_count(b->router) == 0;
}

static void begin_stop(broker_t *b, const char *signal_name)
{
    if (b->stopping) {
        log_info("%s again: stopping now", signal_name);
        b->stop_deadline_ms = 0;
        router_set_stop_ends(b->router, clock_ms() * 1000);
        return;
    }
    b->stopping = true;
    b->last_read_ms = clock_ms();
    router_set_stopping(b->router);
    b->stop_deadline_ms = clock_ms() + b->cfg->shutdown_grace_ms;
    if (b->bus)
        bus_leave(b->bus);              /* new requests go to the other brokers (X8) */
    router_set_stop_ends(b->router, (b->stop_deadline_ms + STOP_QUIET_MAX_MS) * 1000);
    log_info("%s: stopping; %zu request(s) in flight get up to %u ms", signal_name,
             router_inflight_count(b->router), b->cfg->shutdown_grace_ms);
    /* The endpoints stay bound until exit: in libzmq 4.3 zmq_unbind also
     * closes the connections accepted on them, which would cut off the
     * answers still owed (D5). New requests get shutting_down instead. */
}

static void handle_signals(broker_t *b)
{
    struct signalfd_siginfo info;
    while (read(b->signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
        switch (info.ssi_signo) {
        case SIGINT: begin_stop(b, "SIGINT"); break;
        case SIGTERM: begin_stop(b, "SIGTERM"); break;
        case SIGHUP: {
            char err[512], live[1024], fixed[1024];
            log_info("SIGHUP: reloading the policy and the config");
            broker_reload_config(b, live, sizeof live, fixed, sizeof fixed, err, sizeof err);
            if (b->policy)
                broker_reload_policy(b, err, sizeof err);
            break;
        }
        default: break;
        }
    }
}

int broker_reload_config(broker_t *b, char *live, size_t livelen, char *fixed, size_t fixedlen,
                         char *err, size_t errlen)
{
    const char *file = b->cfg->config_path ? b->cfg->config_path : "(no --config file)";
    if (config_reload(b->cfg, live, livelen, fixed, fixedlen, err, errlen) != CONFIG_RUN) {
        log_error("config %s refused, the running settings stay: %s", file, err);
        return -1;
    }
    const config_t *cfg = b->cfg;
    log_set_level(cfg->log_level);
    inflight_set_limits(router_inflight(b->router), cfg->max_inflight, cfg->max_inflight_per_peer,
                        cfg->max_inflight_per_instance);
    /* the allow list's file may have changed though its path did not */
    if (b->auth && auth_reload_allow(b->auth, cfg->curve_allow, err, errlen) < 0) {
        log_error("config %s: allow list refused, the previous one stays: %s", file, err);
        return -1;
    }
    log_info("config %s reloaded: applied %s%s; needs a restart to change: %s", file,
             *live ? live : "(no setting changed)", b->auth ? " and the allow list" : "",
             *fixed ? fixed : "nothing that changed");
    return 0;
}

/* How long the loop may sleep: until the next deadline, at most 1 s. */
static long poll_timeout(broker_t *b, uint64_t now)
{
    uint64_t next = inflight_next_deadline(router_inflight(b->router));
    if (b->stopping && b->stop_deadline_ms < next)
        next = b->stop_deadline_ms;
    if (b->policy_reload_due && b->policy_reload_due < next)
        next = b->policy_reload_due;
    if (b->services) {
        uint64_t due = services_next_due(b->services);
        if (due < next)
            next = due;
    }
    if (conn_bytes_next_due(b->conns) < next)
        next = conn_bytes_next_due(b->conns);
    if (b->restore_due && b->restore_due < next)
        next = b->restore_due;
    if (b->stopping && b->last_read_ms + STOP_QUIET_MS < next)
        next = b->last_read_ms + STOP_QUIET_MS;
    if (b->http && http_next_due(b->http) < next)
        next = http_next_due(b->http);
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
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s", endpoints);

    /* Waited on with poll(2) over the sockets' ZMQ_FD descriptors rather
     * than zmq_poll: zmq_poll polls once without waiting, then again, and
     * asks every socket for ZMQ_EVENTS each time, each a system call (at
     * full load the broker now makes about 0.6 times the poll calls:
     * docs/performance.md, "What changed"). A ZMQ_FD only says "look at
     * this socket": it is reliable when the socket was last left with a
     * receive that found nothing, so every socket here is always read
     * until EAGAIN, and the loop does not sleep after sending on the
     * ROUTER since its last empty receive (a send may take in the very
     * notice that a message arrived). */
    enum { P_ROUTER, P_MONITOR, P_SIGNALS, P_WATCH, P_ZAP, P_HTTP, P__COUNT };
    struct pollfd fds[P__COUNT + 2];    /* + the NATS socket and its eventfd (--nats) */
    int fd_count = 0;
    int slot[P__COUNT];
    void *zsock[P__COUNT] = {b->socket, b->monitor, NULL, NULL,
                             b->auth ? auth_zap_socket(b->auth) : NULL, NULL};
    int raw[P__COUNT] = {-1, -1, b->signal_fd, watch_fd(b->watch), -1,
                         b->http ? http_wake_fd(b->http) : -1};
    for (int i = 0; i < P__COUNT; i++) {
        slot[i] = -1;
        int fd = raw[i];
        size_t size = sizeof fd;
        if (zsock[i] && zmq_getsockopt(zsock[i], ZMQ_FD, &fd, &size) < 0)
            fd = -1;
        if (fd < 0)
            continue;
        slot[i] = fd_count;
        fds[fd_count++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    int bus_slot = fd_count;
    bool first = true, wake_now = false;
    for (;;) {
        uint64_t now = clock_ms();
        if (b->stopping && stop_now(b, now))
            break;
        if (b->bus)                     /* its socket changes with every reconnect */
            bus_poll_prepare(b->bus, &fds[bus_slot]);
        if (poll(fds, (nfds_t)(fd_count + (b->bus ? 2 : 0)),
                 wake_now ? 0 : (int)poll_timeout(b, now)) < 0 &&
            errno != EINTR) {
            log_error("poll failed: %s", strerror(errno));
            return 1;
        }
#define FIRED(i) (first || (slot[i] >= 0 && fds[slot[i]].revents))
        if (FIRED(P_SIGNALS))
            handle_signals(b);
        if (b->http && FIRED(P_HTTP))
            http_woken(b->http);        /* a scrape waits: http_tick says when */
        if (b->auth && FIRED(P_ZAP))
            auth_handle_zap(b->auth);
        /* connection events before the messages that follow them */
        if (FIRED(P_MONITOR))
            drain_monitor(b);
        /* the ROUTER on every pass: a pass is rare when it is idle */
        bool batch_full = false;
        for (int done = 0, unchecked = 0;;) {
            static wire_msg_t group[GROUP_MAX];
            static router_read_t reads[GROUP_MAX];
            int n = 0;
            while (n < GROUP_MAX && wire_recv(b->socket, &group[n]) == 0)
                conn_bytes_read(b->conns, group[n++].fd);
            if (n == 0)
                break;                  /* the ROUTER was left with an empty receive */
            if (b->stopping)
                b->last_read_ms = clock_ms();
            for (int i = 0; i < n; i++)
                router_read(b->router, &group[i], &reads[i]);
            for (int i = 0; i < n; i++) {
                router_handle_read(b->router, &group[i], &reads[i]);
                wire_msg_close(&group[i]);
            }
            /* hosted services answer this group now, not after the batch */
            if (b->services && services_have_queued(b->services))
                services_run_queued(b->services);
            done += n;
            /* every GROUP_MAX messages, not every group: at a low rate a
             * group is one message, and the check is a system call */
            unchecked += n;
            if (unchecked >= GROUP_MAX) {
                unchecked = 0;
                if (socket_readable(b->monitor))
                    drain_monitor(b);
            }
            if (done >= BATCH_MAX) {
                batch_full = true;
                break;
            }
        }
        uint64_t sends_after_read = b->socket_sends;
        /* after the ROUTER's empty receive: what this sends on it wakes the loop */
        bool bus_more = b->bus && bus_poll_done(b->bus, &fds[bus_slot], BATCH_MAX);
        if (FIRED(P_WATCH))
            watch_read(b->watch, on_file_changed, b);
#undef FIRED
        first = false;
        now = clock_ms();
        reload_if_due(b, now);
        if (b->services)
            services_run(b->services, now);
        router_expire(b->router, now);
        if (b->restore_due && now >= b->restore_due) {
            b->restore_due = 0;
            size_t dropped = router_restored_expire(b->router);
            log_info("restart grace period over: %zu restored peer(s) did not come back", dropped);
        }
        /* only when the ROUTER was read empty: every whole message that
         * arrived has been counted, so unread bytes are truly unread */
        if (!batch_full && now >= conn_bytes_next_due(b->conns)) {
            if (socket_readable(b->monitor))
                drain_monitor(b);       /* descriptors up to date before they are looked at */
            conn_bytes_check(b->conns, router_registry(b->router), now);
        }
        if (b->http && http_tick(b->http, now))
            http_publish(b->http, b->router, b->stopping, now);
        wake_now = batch_full || bus_more || b->socket_sends != sends_after_read;
    }
    sd_notify(0, "STOPPING=1");
    if (router_inflight_count(b->router) > 0)
        log_info("grace period over: answering %zu request(s) shutting_down",
                 router_inflight_count(b->router));
    router_fail_all(b->router, ERR_SHUTTING_DOWN, "the broker stopped before this request was answered");
    if (b->bus)
        bus_flush(b->bus, 500);         /* those answers, to the brokers that asked */
    services_free(&b->services);        /* unloads them: their lines come before "stopped" */
    log_info("stopped");
    return 0;
}
