/* broker: the map. How the modules fit together, and the one struct that
 * holds the broker's state.
 *
 *   main.c            flags and config (config.c) -> broker_new -> broker_run
 *   broker.c          sockets, the event loop, the socket monitor, signals
 *   wire.c            frames in and out of the ROUTER socket
 *   json_scan.c       one validating pass over a message's JSON
 *   envelope.c        the protocol's rules for one message
 *   router.c          the message path: decide, deliver, or answer an error
 *   broker_service.c  dst "broker": ping, list_services, stats, reload_policy
 *   policy.c          routing.lua's hooks (filter, route, on_register, ...)
 *   services.c        the Lua services in services/, as virtual peers
 *   lua_service.c     one Lua service: its handlers, timers and `bus` API
 *   sandbox.c         a Lua state with a memory cap and an instruction budget
 *   luamsg.c          envelopes between C and Lua (the lazy msg view)
 *   watch.c           inotify: reload what operators edit
 *   auth.c            CURVE keys, the allow list, the ZAP handler
 *   registry.c        peers (connections) and the names they hold
 *   inflight.c        requests handed out and not yet answered
 *   reply.c           messages the broker itself makes (cJSON)
 *   deadletter.c      refused and undelivered messages, for list and replay
 *   metrics.c         per service/action counters and latency; Prometheus text
 *   metrics_http.c    the --metrics HTTP endpoint (a ZMQ_STREAM socket)
 *   names.c errors.c log.c    small shared rules
 *
 * Everything runs on one thread; the event loop never blocks on a peer. */
#ifndef SMARTSHOP_BROKER_H
#define SMARTSHOP_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "bus_hooks.h"
#include "config.h"
#include "deadletter.h"
#include "inflight.h"
#include "metrics.h"
#include "policy.h"
#include "registry.h"
#include "services.h"
#include "stats.h"
#include "topics.h"
#include "watch.h"

typedef struct broker {
    const config_t *cfg;
    void *zmq_ctx;
    void *router;               /* the ROUTER socket all peers talk to */
    uint64_t router_sends;      /* messages sent on it (the loop's wake-up rule, broker_run) */
    void *monitor;              /* PAIR socket receiving the ROUTER's connection events */
    struct conn_bytes *conns;   /* bytes per connection, in and out (conn_bytes.h) */
    int signal_fd;              /* SIGINT, SIGTERM, SIGHUP (signalfd) */
    registry_t *registry;
    inflight_table_t *inflight;
    topics_t *topics;           /* topic subscriptions (docs/protocol.md TP1-TP5) */
    deadletters_t *dead;        /* refused and undelivered messages */
    auth_t *auth;               /* NULL in plain mode (not owned) */
    metrics_t *metrics;
    void *metrics_http;         /* ZMQ_STREAM socket of --metrics, or NULL */
    int watchers;               /* peers that asked for a copy of every event */
    bool replaying;             /* a dead letter is being re-injected (no replay inside) */
    stats_t stats;
    uint64_t started_ms;
    bool stopping;              /* SIGTERM/SIGINT seen: grace period running */
    uint64_t stop_deadline_ms;
    policy_t *policy;           /* NULL when running without a policy file */
    services_t *services;       /* NULL when running without a services directory */
    watch_t *watch;             /* the policy's and services' directories, for live reload */
    int policy_watch, services_watch; /* their indexes in `watch`, -1 if not watched */
    uint64_t policy_reload_due; /* when a change seen on disk is reloaded (0: none) */
    struct bus *bus;            /* the NATS link to other brokers (bus.c), or NULL */
    bus_hooks_t bus_hooks;      /* how the router reaches them (ctx NULL: no bus) */
    struct router_bus *crossing; /* the router's state for what crosses (router.c) */
} broker_t;

/* Creates the sockets and binds every endpoint. On failure returns NULL
 * with a one-line reason in `err` and the exit code in *exit_code (2 for
 * a bad policy, 1 for a runtime failure such as an endpoint in use). The caller must have blocked SIGINT,
 * SIGTERM and SIGHUP in every thread (see main.c) before calling. */
broker_t *broker_new(const config_t *cfg, auth_t *auth, char *err, size_t errlen,
                     int *exit_code);

/* Loads the policy file again (SIGHUP, a change on disk, reload_policy).
 * Returns 0, or -1 with the reason in `err`; either way it is logged, and
 * on failure the running version stays. */
int broker_reload_policy(broker_t *b, char *err, size_t errlen);

/* Runs until SIGINT or SIGTERM and the grace period. Returns the exit code. */
int broker_run(broker_t *b);

void broker_free(broker_t **self_p);

#endif
