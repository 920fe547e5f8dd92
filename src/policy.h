/* policy: the operator's routing policy, policies/routing.lua, and the
 * hooks it defines (docs/policies.md).
 *
 * Owns the policy's sandbox and its reload: a new version is compiled and
 * checked in a fresh state, and replaces the old one only if it is good.
 * Calls only the hooks the file defines; a message no hook looks at costs
 * nothing here. Decides; never sends. Every call into the policy's Lua
 * (loading included) is one sandbox_protected() body: a hook, its
 * arguments and its results never touch Lua outside it. */
#ifndef SMARTSHOP_POLICY_H
#define SMARTSHOP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "errors.h"
#include "registry.h"
#include "sandbox.h"

typedef enum {
    HOOK_FILTER = 1 << 0,
    HOOK_ROUTE = 1 << 1,
    HOOK_ON_REGISTER = 1 << 2,
    HOOK_ON_UNREGISTER = 1 << 3,
    HOOK_AUTHORIZE = 1 << 4,
    HOOK_ON_OUTCOME = 1 << 5,
} policy_hook_t;

typedef enum {
    POLICY_PASS = 0,     /* go on as if no hook were defined */
    POLICY_DECIDED,      /* the hook chose (a rewrite, a route) */
    POLICY_REJECT,       /* refused: answer policy_refusal_code() (`denied` unless
                            the hook named another) with the reason */
    POLICY_FAIL          /* the hook failed: answer `policy_error` */
} policy_verdict_t;

struct state;

#define ROUTE_MAX_TARGETS 16

/* Where route() sends a message: one or more service names, or one
 * instance of one service. */
typedef struct {
    int count;
    char names[ROUTE_MAX_TARGETS][NAME_MAX_LEN + 1];
    peer_t *instance;            /* set if the hook picked an instance */
} route_t;

#define POLICY_HOOK_COUNT 6

typedef struct policy {
    char *path;
    sandbox_t *sandbox;          /* NULL until a version loads */
    sandbox_limits_t limits;
    registry_t *registry;        /* read-only, for ctx */
    unsigned hooks;              /* policy_hook_t bits the loaded version defines */
    int hook_refs[POLICY_HOOK_COUNT][MT__COUNT]; /* the hook functions, taken when the
                                         file loaded (registry refs, in hook_names order),
                                         by message type: LUA_NOREF for a type the hook
                                         has no function for (never called for it) */
    struct policy_cache *cache;  /* kept decisions (policy_cache.h), or NULL: none kept */
    bool not_kept[POLICY_HOOK_COUNT][MT__COUNT]; /* this version's hook is not watched
                                    for the cache: it was seen to store or call what is
                                    not known to be pure, or its type's hooks read more
                                    than names */
    const void *pure_fns[40];    /* the C functions known to be pure, by address
                                    (policy.c, pure_names); [0] is ctx.has */
    int pure_fn_count;
    const void *raw_fns[4];      /* of those, the ones that read a table raw (next,
                                    rawget, rawlen): they see a payload proxy settled */
    int raw_fn_count;
    bool gc_remark;              /* a collection cleared the cache's mark: set it again */
    uint64_t gc_looked_at;       /* sandbox_calls when the mark was last looked at */
    char *source;                /* the running version's text: rebuilt from it if
                                    its state ever fails (sandbox_is_broken) */
    size_t source_len;
    uint64_t loads, failed_loads, hook_errors;
    bus_err_t refusal_code;      /* the last POLICY_REJECT's code */
    /* which version runs (docs/operations.md, "The last good policy") */
    struct state *state;         /* where each version that loads is kept, or NULL */
    char file_sha256[65];        /* of the file as last read ("" if never read) */
    char loaded_sha256[65];      /* of the version running ("" if none) */
    char stale_since[32];        /* ISO-8601 since when the running version is not
                                    the file's ("" while it is) */
    bool fallback;               /* started on the last good version: the file did not load */
} policy_t;

/* How a request settled, for on_outcome: what the broker learnt when its
 * answer came, its deadline passed or its instance went away. */
typedef enum { OUTCOME_OK, OUTCOME_ERROR, OUTCOME_TIMEOUT, OUTCOME_GONE } outcome_kind_t;

typedef struct {
    const char *service;         /* the name it was delivered to */
    const void *instance;        /* the instance's identity (bytes), or NULL */
    size_t instance_len;
    const char *action;          /* "" if none */
    outcome_kind_t kind;
    const char *code;            /* an error answer's code, or NULL */
    double latency_ms;
} policy_outcome_t;

/* A policy for `path` (nothing loaded yet). */
policy_t *policy_new(const char *path, sandbox_limits_t limits, registry_t *registry);
void policy_free(policy_t **self_p);

/* Loads the file into a fresh sandbox; on success it replaces the running
 * version. Returns 0, or -1 with "file:line: error" in `err` (the running
 * version, if any, stays). */
int policy_load(policy_t *p, char *err, size_t errlen);

static inline bool policy_has(const policy_t *p, policy_hook_t hook)
{
    return p && (p->hooks & hook);
}

/* The error code of the last POLICY_REJECT: `denied`, or the one the
 * hook returned third (bad_payload, unavailable, busy, limit_exceeded). */
static inline bus_err_t policy_refusal_code(const policy_t *p)
{
    return p->refusal_code;
}

/* At start: loads the file and, if it does not load and `strict` is
 * false, the last good version kept in `st` (for the same path), with a
 * loud warning. Every version that loads from now on is kept in `st`.
 * Returns 0 (the file loaded), 1 (the last good version runs), or -1 with
 * the file's error in `err`. */
int policy_start(policy_t *p, struct state *st, bool strict, char *err, size_t errlen);

/* filter(msg): PASS, REJECT (reason), FAIL (err), or DECIDED with a
 * rewritten message in *rewritten (malloc'd JSON; caller frees). */
policy_verdict_t policy_filter(policy_t *p, const envelope_t *env, char **rewritten,
                               size_t *rewritten_len, char *reason, size_t reasonlen);

/* route()'s verdict when policy_filter_route ran it. */
typedef struct {
    bool taken;                  /* route() ran (or was skipped for the type):
                                    verdict and route are its answer */
    policy_verdict_t verdict;    /* as policy_route's */
    route_t route;
} policy_route_ahead_t;

/* filter(msg) and, if it passes the message unchanged, route(msg, ctx) in
 * the same protected call (one entry into Lua instead of two; each hook
 * with its own instruction budget). For a message the router would route
 * next, unchanged: what route() said is then in *ahead (ahead->taken), and
 * the router uses it instead of calling policy_route. Returns filter()'s
 * verdict, as policy_filter; a failed route() is ahead->verdict FAIL (its
 * error in `text`). */
policy_verdict_t policy_filter_route(policy_t *p, const envelope_t *env, char **rewritten,
                                     size_t *rewritten_len, char *text, size_t textlen,
                                     policy_route_ahead_t *ahead);

/* authorize(msg, peer): PASS, REJECT (reason) or FAIL. `peer` is the
 * sending connection (its names and CURVE key). */
policy_verdict_t policy_authorize(policy_t *p, const envelope_t *env, const peer_t *peer,
                                  char *reason, size_t reasonlen);

/* route(msg, ctx): PASS (default route), DECIDED (see `out`), FAIL. */
policy_verdict_t policy_route(policy_t *p, const envelope_t *env, route_t *out,
                              char *err, size_t errlen);

/* on_register(name, peer): PASS or REJECT (reason), FAIL. */
policy_verdict_t policy_on_register(policy_t *p, const char *name, const peer_t *peer,
                                    char *reason, size_t reasonlen);

/* on_unregister(name, peer): a notification; errors are only logged. */
void policy_on_unregister(policy_t *p, const char *name, const peer_t *peer);

/* on_outcome(o): a notification, after a request settled; errors are
 * only logged. `o` as the hook sees it: {service, instance, action,
 * outcome = "ok"|"error"|"timeout"|"gone", code, latency_ms}. */
void policy_on_outcome(policy_t *p, const policy_outcome_t *o);

/* The names of the hooks the running version defines, e.g. "filter route". */
void policy_describe_hooks(const policy_t *p, char *out, size_t cap);

/* The file it loads. */
const char *policy_path(const policy_t *p);

/* Whether a version runs; how many loads worked and failed, and how many
 * hook calls failed (the dashboard's). */
bool policy_is_loaded(const policy_t *p);
typedef struct {
    uint64_t loads, failed_loads, hook_errors;
    uint64_t cache_hits, cache_misses;  /* the decision cache's lookups (policy_cache.h) */
} policy_counts_t;
policy_counts_t policy_counts(const policy_t *p);

/* Which version runs, against the file (each "" when not known). */
typedef struct {
    const char *file_sha256;     /* of the file as last read */
    const char *loaded_sha256;   /* of the version running */
    const char *stale_since;     /* since when the running version is not the file's */
    bool fallback;               /* started on the last good version */
} policy_version_t;
policy_version_t policy_version(const policy_t *p);

/* The running version's text and its length (NULL before one loaded). */
const char *policy_source(const policy_t *p, size_t *len);

#endif
