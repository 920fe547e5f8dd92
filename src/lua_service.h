/* lua_service: one service written in Lua (services/NAME.lua), hosted by
 * the broker as a virtual peer (docs/lua-services.md).
 *
 * Owns the service's sandboxed state, its handlers (on_request, on_event,
 * on_broadcast), its timers and its pending outgoing requests, and the
 * `bus` API it calls. A loaded version is replaced as a whole on reload.
 * Sends through its host (lua_host_t: services.c, which hands it to the
 * router), so what a Lua service sends passes the same checks and policy
 * hooks as anything from the wire; it calls nothing above it. Every call into
 * the service's Lua (loading, handlers, callbacks, timers) is one
 * sandbox_protected() body; its table is read raw (rawget), and `bus` is
 * kept in the registry. */
#ifndef SMARTSHOP_LUA_SERVICE_H
#define SMARTSHOP_LUA_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include <zmq.h>

#include "envelope.h"
#include "names.h"
#include "sandbox.h"

struct peer;

/* What its host gives a service: the one way out, and the settings it
 * needs. send: a message from the service's peer `from` (consumes
 * `data`), with its envelope if written already (`env` points into
 * `data`), else NULL. */
typedef struct lua_host {
    void *ctx;
    void (*send)(void *ctx, struct peer *from, zmq_msg_t *data, envelope_t *env);
    uint32_t request_timeout_ms;  /* a bus.request's default (--request-timeout-ms) */
} lua_host_t;

typedef struct lua_service lua_service_t;
typedef struct lua_version lua_version_t;

/* A service for the file `file` at `path`, sending through `host` (which
 * must outlive it); its handlers and timers may spend `pass_budget`
 * instructions in one pass of the host (0: no bound). No version runs
 * until lua_service_swap_version. NULL if memory ran out. */
lua_service_t *lua_service_new(const lua_host_t *host, const char *path, const char *file,
                               long pass_budget);
/* Frees it and its running version (its peer is the host's to drop first). */
void lua_service_free(lua_service_t **self_p);

/* Its file name in the services directory; the running version's name
 * ("" before one runs). */
const char *lua_service_file(const lua_service_t *svc);
const char *lua_service_name(const lua_service_t *svc);

/* Its virtual peer (NULL until the host registered it). */
struct peer *lua_service_peer(const lua_service_t *svc);
void lua_service_set_peer(lua_service_t *svc, struct peer *peer);

/* Makes `fresh` the running version; returns the one it replaces (NULL
 * the first time), for the caller to free. */
lua_version_t *lua_service_swap_version(lua_service_t *svc, lua_version_t *fresh);

/* Whether the running version's Lua state failed (a panic: a bug). */
bool lua_service_is_broken(const lua_service_t *svc);

/* A new pass of the host: the pass budget is whole again. */
void lua_service_begin_pass(lua_service_t *svc);

/* A version's service name (from its file's table). */
const char *lua_version_name(const lua_version_t *v);

/* Loads `path` into a new version for `svc`. Returns NULL with
 * "file:line: error" in `err` if the file does not load or does not
 * return a service table. */
lua_version_t *lua_version_load(lua_service_t *svc, sandbox_limits_t limits,
                                char *err, size_t errlen);
void lua_version_free(lua_version_t **self_p);

/* Hands svc's running version's state to `fresh`, which is to replace it
 * (docs/lua-services.md, "Reload hand-over"): if fresh's table has
 * on_reload, it is called with the old version's state (what its
 * on_save() returns, else its table's `state` field), copied across the
 * two Lua states as JSON (lua_json.c: arrays and 64-bit integers kept).
 * Returns 0, or -1 with the reason in `err`: the reload must then be
 * refused (the old version keeps running, with its state). */
int lua_service_hand_over(lua_service_t *svc, lua_version_t *fresh, char *err, size_t errlen);

/* Answers every request `v` still holds for a late answer with error
 * service_error `why` (a version being replaced), so each gets exactly
 * one answer. */
void lua_version_abandon_later(lua_version_t *v, const char *why);

/* Handles one message delivered to the service (a request, an event or
 * broadcast, or the answer to a request it sent). */
void lua_service_handle(lua_service_t *svc, const envelope_t *env);

/* Sends `action` ("subscribe" or "unsubscribe") to the broker, from `v`,
 * for every topic pattern that `list` declares (v itself, or the version
 * it replaces), through the router like any request of the service. */
void lua_service_send_subscriptions(lua_version_t *v, const lua_version_t *list,
                                    const char *action);

/* Runs the timers that are due, while the pass budget lasts; the rest
 * stay due for the next pass. */
void lua_service_run_timers(lua_service_t *svc, uint64_t now_ms);

/* Whether the service has spent its pass budget (pass_used). */
bool lua_service_pass_spent(const lua_service_t *svc);

/* The earliest timer, or UINT64_MAX. */
uint64_t lua_service_next_timer(const lua_service_t *svc);

#endif
