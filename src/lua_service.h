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

typedef struct lua_timer {
    uint64_t due_ms;
    uint32_t every_ms;           /* 0: once */
    int fn_ref;                  /* LUA_NOREF once cancelled or fired */
    int id;
} lua_timer_t;

/* One loaded version of a service file. */
#define LUA_SERVICE_MAX_SUBSCRIPTIONS 32
/* Requests a version may hold for a late answer (bus.later) at once. */
#define LUA_SERVICE_MAX_LATER 4096

/* A request taken by bus.later(msg): what its answer needs, kept until it
 * is answered or its deadline passes. */
typedef struct {
    char src[NAME_MAX_LEN + 1];  /* the requester (the answer's dst) */
    char msg_id[MSG_ID_MAX_LEN + 1];  /* raw, as in the request (escapes kept) */
    char action[MSG_ID_MAX_LEN + 1];
    uint8_t msg_id_len, action_len;
    bool msg_id_escaped, action_escaped, has_action;
    uint64_t due_ms;             /* its deadline (ttl_ms or --request-timeout-ms); 0: free */
    uint32_t gen;                /* bumped when the slot is freed: old handles go stale */
} lua_later_t;

typedef struct lua_version {
    struct lua_service *service; /* the service it belongs (or will belong) to */
    sandbox_t *sandbox;
    char name[NAME_MAX_LEN + 1];
    int table_ref;               /* the table the file returned */
    int bus_ref;                 /* its `bus` table (the global may be changed) */
    int pending_ref;             /* msg_id -> callback of requests it sent */
    unsigned handlers;           /* which on_* the table defines */
    lua_timer_t *timers;
    int timer_count, timer_cap, next_timer_id;
    int timer_cursor;            /* where the last pass over the timers stopped */
    /* the topic patterns the file's table declares (`subscribe = {...}`),
     * subscribed when the version starts (docs/lua-services.md) */
    struct {
        char pattern[TOPIC_MAX_LEN + 1];
        char group[NAME_MAX_LEN + 1];    /* "" for none */
    } subs[LUA_SERVICE_MAX_SUBSCRIPTIONS];
    int sub_count;
    lua_later_t *later;          /* requests waiting for a late answer */
    int later_count, later_cap;  /* slots in use (not yet answered), allocated */
    const envelope_t *current;   /* the request on_request is handling, or NULL */
    bool deferred;               /* on_request called bus.later(msg) for it */
} lua_version_t;

typedef struct lua_service {
    const lua_host_t *host;
    char path[512];
    char file[128];              /* its file name in the services directory */
    struct peer *peer;           /* its virtual peer (NULL until registered) */
    lua_version_t *version;      /* the running version */
    uint32_t queued;             /* messages waiting for it */
    long pass_budget;            /* instructions its handlers and timers may spend in
                                    one pass of services.c before it waits (a call
                                    started within it may finish: at most twice this) */
    long pass_used;              /* spent in this pass (services.c resets it) */
    struct lua_service *next;
} lua_service_t;

/* Loads `path` into a new version for `svc`. Returns NULL with
 * "file:line: error" in `err` if the file does not load or does not
 * return a service table. */
lua_version_t *lua_version_load(lua_service_t *svc, sandbox_limits_t limits,
                                char *err, size_t errlen);
void lua_version_free(lua_version_t **self_p);

/* Hands the running version's state to `fresh`, which replaces it
 * (docs/lua-services.md, "Reload hand-over"): if fresh's table has
 * on_reload, it is called with the old version's state (what its
 * on_save() returns, else its table's `state` field), copied across the
 * two Lua states as JSON (lua_json.c: arrays and 64-bit integers kept).
 * Returns 0, or -1 with the reason in `err`: the reload must then be
 * refused (the old version keeps running, with its state). */
int lua_version_take_over(lua_version_t *fresh, lua_version_t *old, char *err, size_t errlen);

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
