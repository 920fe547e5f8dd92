/* policy: routing.lua's hooks, its sandbox and its reload. See policy.h. */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"
#include "luamsg.h"

static log_ratelimit_t hook_error_limit;

static const struct {
    const char *name;
    policy_hook_t bit;
} hook_names[] = {
    {"filter", HOOK_FILTER},
    {"route", HOOK_ROUTE},
    {"on_register", HOOK_ON_REGISTER},
    {"on_unregister", HOOK_ON_UNREGISTER},
    {"authorize", HOOK_AUTHORIZE},
};
#define HOOK_COUNT (sizeof hook_names / sizeof hook_names[0])

policy_t *policy_new(const char *path, sandbox_limits_t limits, registry_t *registry)
{
    policy_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->path = strdup(path);
    p->limits = limits;
    p->registry = registry;
    if (!p->path) {
        free(p);
        return NULL;
    }
    return p;
}

void policy_free(policy_t **self_p)
{
    policy_t *p = *self_p;
    if (!p)
        return;
    sandbox_free(&p->sandbox);
    free(p->path);
    free(p);
    *self_p = NULL;
}

void policy_describe_hooks(const policy_t *p, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < HOOK_COUNT; i++) {
        if (!(p->hooks & hook_names[i].bit))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", used ? " " : "", hook_names[i].name);
    }
    if (!out[0])
        snprintf(out, cap, "none");
}

/* --- ctx: the registry, read-only, for route() --- */

static policy_t *ctx_policy(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ctx.instances(name) -> { {id = "...", load = n}, ... } */
static int ctx_instances(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    service_t *svc = registry_find_service(ctx_policy(L)->registry, name, len);
    lua_createtable(L, svc ? svc->count : 0, 0);
    for (int i = 0; svc && i < svc->count; i++) {
        peer_t *peer = svc->instances[i];
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, (const char *)peer->id, peer->id_len);
        lua_setfield(L, -2, "id");
        lua_pushinteger(L, peer->handling_count);
        lua_setfield(L, -2, "load");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ctx.has(name) -> true if at least one instance is registered */
static int ctx_has(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, registry_find_service(ctx_policy(L)->registry, name, len) != NULL);
    return 1;
}

/* ctx.services() -> { "name", ... } */
static int ctx_services(lua_State *L)
{
    registry_t *reg = ctx_policy(L)->registry;
    lua_createtable(L, (int)HASH_COUNT(reg->services), 0);
    int i = 1;
    for (service_t *svc = reg->services; svc; svc = svc->hh.next) {
        lua_pushstring(L, svc->name);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

static void make_ctx(lua_State *L, policy_t *p)
{
    static const luaL_Reg fns[] = {
        {"instances", ctx_instances}, {"has", ctx_has}, {"services", ctx_services}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushlightuserdata(L, p);
    luaL_setfuncs(L, fns, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "smartshop.ctx");
}

/* --- loading --- */

int policy_load(policy_t *p, char *err, size_t errlen)
{
    char label[200];
    snprintf(label, sizeof label, "policy %s", p->path);
    sandbox_t *fresh = sandbox_new(label, p->limits);
    if (!fresh) {
        snprintf(err, errlen, "%s: out of memory", p->path);
        p->failed_loads++;
        return -1;
    }
    luamsg_init(fresh->L);
    make_ctx(fresh->L, p);
    if (sandbox_run_file(fresh, p->path, err, errlen) < 0) {
        sandbox_free(&fresh);
        p->failed_loads++;
        return -1;
    }
    unsigned hooks = 0;
    for (size_t i = 0; i < HOOK_COUNT; i++) {
        int t = lua_getglobal(fresh->L, hook_names[i].name);
        lua_pop(fresh->L, 1);
        if (t == LUA_TFUNCTION) {
            hooks |= hook_names[i].bit;
        } else if (t != LUA_TNIL) {
            snprintf(err, errlen, "%s: %s must be a function, not a %s", p->path,
                     hook_names[i].name, lua_typename(fresh->L, t));
            sandbox_free(&fresh);
            p->failed_loads++;
            return -1;
        }
    }
    sandbox_free(&p->sandbox);              /* the swap: one step */
    p->sandbox = fresh;
    p->hooks = hooks;
    p->loads++;
    return 0;
}

/* --- calling hooks --- */

/* Logs a hook's failure (one line: sandbox_call made it so), at most 20
 * lines a minute. */
static void hook_failed(policy_t *p, const char *hook, const char *err)
{
    p->hook_errors++;
    log_limited(&hook_error_limit, 20, LOG_LEVEL_WARN, "policy %s: %s() failed: %s",
                p->path, hook, err);
}

/* Pushes the hook function; the caller pushes its arguments and calls. */
static lua_State *begin_hook(policy_t *p, const char *hook)
{
    lua_State *L = p->sandbox->L;
    lua_getglobal(L, hook);
    return L;
}

/* reason from a hook's second result, or a default */
static void take_reason(lua_State *L, int index, const char *fallback, char *reason, size_t cap)
{
    const char *text = lua_type(L, index) == LUA_TSTRING ? lua_tostring(L, index) : fallback;
    snprintf(reason, cap, "%s", text);
}

policy_verdict_t policy_filter(policy_t *p, const envelope_t *env, char **rewritten,
                               size_t *rewritten_len, char *reason, size_t reasonlen)
{
    lua_State *L = begin_hook(p, "filter");
    luamsg_push(L, env);
    int rc = sandbox_call(p->sandbox, 1, 2, reason, reasonlen);
    luamsg_release(L);
    if (rc < 0) {
        hook_failed(p, "filter", reason);
        return POLICY_FAIL;
    }
    policy_verdict_t verdict = POLICY_PASS;
    int t = lua_type(L, -2);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
        take_reason(L, -1, "denied by policy", reason, reasonlen);
        verdict = POLICY_REJECT;
    } else if (t == LUA_TTABLE) {
        *rewritten = luamsg_encode(L, -2, rewritten_len, reason, reasonlen);
        if (*rewritten) {
            verdict = POLICY_DECIDED;
        } else {
            hook_failed(p, "filter", reason);
            verdict = POLICY_FAIL;
        }
    } else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
        snprintf(reason, reasonlen, "filter() returned a %s; expected nothing, true, false or a table",
                 lua_typename(L, t));
        hook_failed(p, "filter", reason);
        verdict = POLICY_FAIL;
    }
    lua_pop(L, 2);
    return verdict;
}

/* Reads one target name from the value at `index` into out->names. */
static bool add_target(lua_State *L, int index, route_t *out, char *err, size_t errlen)
{
    size_t len;
    const char *name = lua_type(L, index) == LUA_TSTRING ? lua_tolstring(L, index, &len) : NULL;
    if (!name || !name_is_valid(name, len)) {
        snprintf(err, errlen, "route() returned something that is not a service name");
        return false;
    }
    if (out->count == ROUTE_MAX_TARGETS) {
        snprintf(err, errlen, "route() returned more than %d names", ROUTE_MAX_TARGETS);
        return false;
    }
    memcpy(out->names[out->count], name, len);
    out->names[out->count][len] = '\0';
    out->count++;
    return true;
}

policy_verdict_t policy_route(policy_t *p, const envelope_t *env, route_t *out,
                              char *err, size_t errlen)
{
    lua_State *L = begin_hook(p, "route");
    luamsg_push(L, env);
    lua_getfield(L, LUA_REGISTRYINDEX, "smartshop.ctx");
    int rc = sandbox_call(p->sandbox, 2, 2, err, errlen);
    luamsg_release(L);
    if (rc < 0) {
        hook_failed(p, "route", err);
        return POLICY_FAIL;
    }
    out->count = 0;
    out->instance = NULL;
    policy_verdict_t verdict = POLICY_DECIDED;
    int t = lua_type(L, -2);
    if (t == LUA_TNIL) {
        verdict = POLICY_PASS;
    } else if (t == LUA_TSTRING) {
        if (!add_target(L, -2, out, err, errlen))
            verdict = POLICY_FAIL;
        else if (lua_type(L, -1) == LUA_TSTRING) {
            /* route() returned name, instance id: that instance, if it holds the name */
            size_t id_len;
            const char *id = lua_tolstring(L, -1, &id_len);
            out->instance = registry_find_instance(p->registry, out->names[0],
                                                   strlen(out->names[0]), id, id_len);
        }
    } else if (t == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -2);
        for (lua_Integer i = 1; i <= n && verdict == POLICY_DECIDED; i++) {
            lua_geti(L, -2, i);
            if (!add_target(L, -1, out, err, errlen))
                verdict = POLICY_FAIL;
            lua_pop(L, 1);
        }
        if (verdict == POLICY_DECIDED && out->count == 0)
            verdict = POLICY_PASS;
    } else {
        snprintf(err, errlen, "route() returned a %s; expected nothing, a name or a list of names",
                 lua_typename(L, t));
        verdict = POLICY_FAIL;
    }
    if (verdict == POLICY_FAIL)
        hook_failed(p, "route", err);
    lua_pop(L, 2);
    return verdict;
}

/* The peer as hooks see it: { id = "...", names = {...}, key = "..." }
 * (key: its CURVE public key, nil in plain mode). */
static void push_peer(lua_State *L, const peer_t *peer)
{
    lua_createtable(L, 0, 3);
    if (peer->key[0]) {
        lua_pushstring(L, peer->key);
        lua_setfield(L, -2, "key");
    }
    lua_pushlstring(L, (const char *)peer->id, peer->id_len);
    lua_setfield(L, -2, "id");
    lua_createtable(L, peer->name_count, 0);
    for (int i = 0; i < peer->name_count; i++) {
        lua_pushstring(L, peer->names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "names");
}

policy_verdict_t policy_authorize(policy_t *p, const envelope_t *env, const peer_t *peer,
                                  char *reason, size_t reasonlen)
{
    lua_State *L = begin_hook(p, "authorize");
    luamsg_push(L, env);
    push_peer(L, peer);
    int rc = sandbox_call(p->sandbox, 2, 2, reason, reasonlen);
    luamsg_release(L);
    if (rc < 0) {
        hook_failed(p, "authorize", reason);
        return POLICY_FAIL;
    }
    policy_verdict_t verdict = POLICY_PASS;
    if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
        take_reason(L, -1, "not authorized", reason, reasonlen);
        verdict = POLICY_REJECT;
    }
    lua_pop(L, 2);
    return verdict;
}

policy_verdict_t policy_on_register(policy_t *p, const char *name, const peer_t *peer,
                                    char *reason, size_t reasonlen)
{
    lua_State *L = begin_hook(p, "on_register");
    lua_pushstring(L, name);
    push_peer(L, peer);
    if (sandbox_call(p->sandbox, 2, 2, reason, reasonlen) < 0) {
        hook_failed(p, "on_register", reason);
        return POLICY_FAIL;
    }
    policy_verdict_t verdict = POLICY_PASS;
    if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
        take_reason(L, -1, "name refused by policy", reason, reasonlen);
        verdict = POLICY_REJECT;
    }
    lua_pop(L, 2);
    return verdict;
}

void policy_on_unregister(policy_t *p, const char *name, const peer_t *peer)
{
    char err[512];
    lua_State *L = begin_hook(p, "on_unregister");
    lua_pushstring(L, name);
    push_peer(L, peer);
    if (sandbox_call(p->sandbox, 2, 0, err, sizeof err) < 0)
        hook_failed(p, "on_unregister", err);
}
