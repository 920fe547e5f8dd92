/* broker: the map, and the top of the broker: its sockets and event loop.
 *
 * The layers, top down (each calls only the ones below it; checked by
 * tools/check_layers.py, docs/architecture.md tells the message path):
 *
 *   main.c            flags and config (config.c) -> broker_new -> broker_run
 *   broker.c          the ROUTER socket, the socket monitor, signals, the loop;
 *                     builds the router and gives it its transport and clock
 *   http.c            the --metrics HTTP endpoint (libmicrohttpd, its own thread):
 *                     metrics, health, the JSON API, the dashboard (web/,
 *                     compiled in as http_assets.h by embed_assets.cmake)
 *   http_snapshot.c   the state it serves, taken on the loop's thread
 *   http_history.c    rates and latency over the last minutes (HTTP thread)
 *   process_stats.c   CPU, memory and descriptors of the process (HTTP thread)
 *   broker_service.c  dst "broker": ping, list_services, stats, reload_policy
 *   bus.c             this broker as one of several on NATS (--nats): the
 *                     router's bus_hooks.h, arrivals handed to the router
 *   nats_link.c       the one connection to the NATS cluster (libnats)
 *   services.c        the Lua services in services/, as virtual peers
 *   lua_service.c     one Lua service: its handlers, timers and `bus` API
 *   lua_json.c        JSON for Lua services that keeps integers and []
 *   router.c          the message path: decide, deliver, or answer an error;
 *                     owns the bus's state (router_t)
 *   policy.c          routing.lua's hooks (filter, route, on_register, ...)
 *   luamsg.c          envelopes between C and Lua (the lazy msg view)
 *   sandbox.c         a Lua state with a memory cap and an instruction budget
 *   pattern_match.c   the sandbox's string patterns (our bounded matcher)
 *   inflight.c        requests handed out and not yet answered
 *   deadletter.c      refused and undelivered messages, for list and replay
 *   metrics.c         per service/action counters and latency; Prometheus text
 *   trace.c           live copies of requests and answers for tracers
 *   state.c           the state directory (SQLite): registrations, dead letters
 *                     and the last good policy across restarts
 *   state_keepers.c   the registry's and dead letters' keepers on state.c
 *   topics.c          topic subscriptions and queue groups
 *   registry.c        peers (connections) and the names they hold
 *   conn_bytes.c      bytes queued and unread per connection (broker.c's sends)
 *   wire.c            frames in and out of the ROUTER socket
 *   envelope.c        the protocol's rules for one message
 *   json_scan.c       one validating pass over a message's JSON
 *                     (json_scan_top.h, bytes16.h: its inline fast paths)
 *   msg_writer.c      an envelope written straight into a frame
 *   reply.c           messages the broker itself makes (cJSON)
 *   auth.c            CURVE keys, the allow list, the ZAP handler
 *   keyfile.c         CURVE key files (also smartshop-ctl's)
 *   watch.c           inotify: reload what operators edit
 *   keyed_hash.c      the keyed hash of every uthash table
 *   sha256.c          SHA-256 of a policy's text (which version runs)
 *   names.c errors.c log.c config.c   small shared rules
 *   clock.h iso_time.h msg_id.h stats.h version.h   header-only helpers
 *   client/           libsmartshop, the C client library (its own state only)
 *   ctl/              smartshop-ctl, the operator's tool (on libsmartshop)
 *   policy_bench/     smartshop-policy, a policy run against recorded messages
 *
 * Everything runs on one thread but HTTP's, which only reads snapshots;
 * the event loop never blocks on a peer.
 * Module state is private to its .c file: others ask through accessors. */
#ifndef SMARTSHOP_BROKER_H
#define SMARTSHOP_BROKER_H

#include <stddef.h>

#include "auth.h"
#include "config.h"

typedef struct broker broker_t;

/* Creates the sockets and binds every endpoint. On failure returns NULL
 * with a one-line reason in `err` and the exit code in *exit_code (2 for
 * a bad policy, 1 for a runtime failure such as an endpoint in use). `cfg`
 * must outlive it; broker_reload_config changes its live settings in place.
 * Opens the state directory (state.h) and restores what it holds. The caller must have blocked SIGINT,
 * SIGTERM and SIGHUP in every thread (see main.c) before calling. */
broker_t *broker_new(config_t *cfg, auth_t *auth, char *err, size_t errlen,
                     int *exit_code);

/* Loads the policy file again (SIGHUP, a change on disk, reload_policy).
 * Returns 0, or -1 with the reason in `err`; either way it is logged, and
 * on failure the running version stays. */
int broker_reload_policy(broker_t *b, char *err, size_t errlen);

/* Reads the config file and flags again (SIGHUP, reload_config): applies
 * what may change live (config_reload), reloads the allow list, and logs
 * one line naming what was applied and what needs a restart. Returns 0,
 * or -1 with `err` (the running settings stay). */
int broker_reload_config(broker_t *b, char *live, size_t livelen, char *fixed, size_t fixedlen,
                         char *err, size_t errlen);

/* Runs until SIGINT or SIGTERM and the grace period. Returns the exit code. */
int broker_run(broker_t *b);

void broker_free(broker_t **self_p);

#endif
