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
#include "registry.h"
#include "sandbox.h"

typedef enum {
    HOOK_FILTER = 1 << 0,
    HOOK_ROUTE = 1 << 1,
    HOOK_ON_REGISTER = 1 << 2,
    HOOK_ON_UNREGISTER = 1 << 3,
    HOOK_AUTHORIZE = 1 << 4,
} policy_hook_t;

typedef enum {
    POLICY_PASS = 0,     /* go on as if no hook were defined */
    POLICY_DECIDED,      /* the hook chose (a rewrite, a route) */
    POLICY_REJECT,       /* refused: answer `denied` with the reason */
    POLICY_FAIL          /* the hook failed: answer `policy_error` */
} policy_verdict_t;

#define ROUTE_MAX_TARGETS 16

/* Where route() sends a message: one or more service names, or one
 * instance of one service. */
typedef struct {
    int count;
    char names[ROUTE_MAX_TARGETS][NAME_MAX_LEN + 1];
    peer_t *instance;            /* set if the hook picked an instance */
} route_t;

#define POLICY_HOOK_COUNT 5

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
    char *source;                /* the running version's text: rebuilt from it if
                                    its state ever fails (sandbox_is_broken) */
    size_t source_len;
    uint64_t loads, failed_loads, hook_errors;
} policy_t;

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

/* filter(msg): PASS, REJECT (reason), FAIL (err), or DECIDED with a
 * rewritten message in *rewritten (malloc'd JSON; caller frees). */
policy_verdict_t policy_filter(policy_t *p, const envelope_t *env, char **rewritten,
                               size_t *rewritten_len, char *reason, size_t reasonlen);

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

/* The names of the hooks the running version defines, e.g. "filter route". */
void policy_describe_hooks(const policy_t *p, char *out, size_t cap);

/* The file it loads. */
const char *policy_path(const policy_t *p);

#endif
