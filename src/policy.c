/* policy: routing.lua's hooks, its sandbox and its reload. See policy.h. */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"
#include "lua_code.h"
#include "lua_json.h"
#include "luamsg.h"
#include "policy_cache.h"
#include "reply.h"
#include "sha256.h"
#include "state.h"

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
    {"on_outcome", HOOK_ON_OUTCOME},
};
#define HOOK_COUNT (sizeof hook_names / sizeof hook_names[0])
_Static_assert(HOOK_COUNT == POLICY_HOOK_COUNT, "one registry ref per hook");
enum { I_FILTER, I_ROUTE, I_ON_REGISTER, I_ON_UNREGISTER, I_AUTHORIZE, I_ON_OUTCOME };

/* The table on_outcome gets, one per state (registry, under this address),
 * filled again for each outcome: nothing allocated per request. */
static const char outcome_key;

policy_t *policy_new(const char *path, sandbox_limits_t limits, registry_t *registry)
{
    policy_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->path = strdup(path);
    p->limits = limits;
    p->registry = registry;
    p->cache = policy_cache_new();      /* NULL: decisions are not kept, all else works */
    for (int i = 0; i < POLICY_HOOK_COUNT; i++)
        for (int mt = 0; mt < MT__COUNT; mt++)
            p->hook_refs[i][mt] = LUA_NOREF;
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
    policy_cache_free(&p->cache);
    free(p->source);
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
    lua_createtable(L, (int)registry_service_count(reg), 0);
    int i = 1;
    for (service_t *svc = registry_next_service(reg, NULL); svc; svc = registry_next_service(reg, svc)) {
        lua_pushstring(L, svc->name);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

/* ctx in the registry under this address: no string to look up a call */
static const char ctx_key;

static void make_ctx(lua_State *L, policy_t *p)
{
    static const luaL_Reg fns[] = {
        {"instances", ctx_instances}, {"has", ctx_has}, {"services", ctx_services}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushlightuserdata(L, p);
    luaL_setfuncs(L, fns, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

/* --- what the decision cache may rely on --- */

/* The C functions a watched call may make and stay pure: they store
 * nothing and answer from their arguments alone (ctx.has from the
 * registry too, which a kept decision then depends on). Taken by
 * identity before the file runs, and anchored (a collected one's address
 * could be reused by another); of one the sandbox wraps to charge it,
 * the original too (the wrapper calls it). ipairs' iterator comes from
 * calling it. Not tostring nor string.format: they show addresses. */
static const char *const pure_names[] = {
    "type", "next", "pairs", "ipairs", "select", "rawget", "rawlen", "rawequal",
    "tonumber", "assert",
    "string.sub", "string.len", "string.lower", "string.upper", "string.byte",
    "string.find", "string.match", "string.rep",
    "math.floor", "math.ceil", "math.abs", "math.min", "math.max", "math.tointeger",
    "math.type", "math.fmod",
};
static const char pure_key;     /* registry: the anchor of those functions */
static const char memo_key;     /* registry: Lua function -> stores nothing (weak keys) */
static const char gc_key;       /* registry: {[1] = a table nothing else holds}, weak values */

typedef struct {
    const void *fns[sizeof ((policy_t *)0)->pure_fns / sizeof(void *)];
    int count;
    const void *raw[sizeof ((policy_t *)0)->raw_fns / sizeof(void *)];
    int raw_count;
} pure_set_t;

/* Of pure_names, those that read a table without its metamethods: a
 * payload proxy (luamsg.h) is settled before they run. */
static bool reads_raw(const char *name)
{
    return strcmp(name, "next") == 0 || strcmp(name, "rawget") == 0 ||
           strcmp(name, "rawlen") == 0;
}

static void take_pure(lua_State *L, pure_set_t *set, int anchor)
{
    if (!lua_iscfunction(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (lua_getupvalue(L, -1, 1)) {
        if (lua_iscfunction(L, -1))
            take_pure(L, set, anchor);          /* a charged wrapper's original (popped) */
        else
            lua_pop(L, 1);
    }
    if (set->count < (int)(sizeof set->fns / sizeof set->fns[0])) {
        set->fns[set->count++] = lua_topointer(L, -1);
        lua_rawseti(L, anchor, set->count);
    } else {
        lua_pop(L, 1);
    }
}

/* A new table whose keys or values (`mode`: "k", "v") the collector may
 * clear. */
static void push_weak_table(lua_State *L, const char *mode)
{
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
}

/* In load_body, before the file runs: ctx.has first, then pure_names. */
static void find_pure_functions(lua_State *L, pure_set_t *set)
{
    lua_createtable(L, 40, 0);
    int anchor = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
    lua_getfield(L, -1, "has");
    lua_remove(L, -2);
    take_pure(L, set, anchor);
    for (size_t i = 0; i < sizeof pure_names / sizeof pure_names[0]; i++) {
        const char *name = pure_names[i], *dot = strchr(name, '.');
        lua_pushglobaltable(L);
        if (dot) {
            lua_pushlstring(L, name, (size_t)(dot - name));
            lua_rawget(L, -2);
            lua_remove(L, -2);
            name = dot + 1;
        }
        if (lua_type(L, -1) == LUA_TTABLE)
            lua_getfield(L, -1, name);
        else
            lua_pushnil(L);
        lua_remove(L, -2);
        int before = set->count;
        take_pure(L, set, anchor);
        if (reads_raw(pure_names[i]) && set->count > before &&
            set->raw_count < (int)(sizeof set->raw / sizeof set->raw[0]))
            set->raw[set->raw_count++] = set->fns[set->count - 1];
        if (strcmp(pure_names[i], "ipairs") == 0) {
            lua_pushglobaltable(L);
            lua_getfield(L, -1, "ipairs");
            lua_remove(L, -2);
            lua_newtable(L);
            lua_call(L, 1, 1);              /* its iterator (and two more, dropped) */
            take_pure(L, set, anchor);
        }
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &pure_key);
    push_weak_table(L, "k");                /* the memo: judged functions, not held */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &memo_key);
    push_weak_table(L, "v");                /* the collector's mark (gc_cleared) */
    lua_newtable(L);
    lua_rawseti(L, -2, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &gc_key);
}

/* Whether a collection cycle cleared weak tables since the mark was set:
 * the mark, a table held only by a weak value, is cleared in the same
 * step as any weak entry a hook could read, so a decision kept before it
 * may be stale. Raw reads: plain, cannot raise. */
static bool gc_cleared(lua_State *L)
{
    int top = lua_gettop(L);
    bool cleared = lua_rawgetp(L, LUA_REGISTRYINDEX, &gc_key) != LUA_TTABLE ||
                   lua_rawgeti(L, -1, 1) == LUA_TNIL;
    lua_settop(L, top);
    return cleared;
}

/* A new mark, in a protected call (it allocates). */
static void gc_mark(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &gc_key);
    lua_newtable(L);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 1);
}

/* --- loading --- */

typedef struct {
    policy_t *p;
    const char *text;
    size_t len;
    unsigned hooks;
    int refs[POLICY_HOOK_COUNT][MT__COUNT];
    pure_set_t pure;
    char *err;                  /* set for a failure that is not a Lua error */
    size_t errlen;
    bool refused;
} load_job_t;

/* The hooks that see messages: each may be a table of functions by
 * message type instead of one function (docs/policies.md, "A hook by
 * message type"). */
#define HOOKS_BY_TYPE (HOOK_FILTER | HOOK_ROUTE | HOOK_AUTHORIZE)

/* The table at -1 (popped) as hook i: {request = fn, event = fn, ...},
 * read raw (its metatable, e.g. a __call, is not looked at). A type
 * without a function is never given to the hook. Returns 0, or -1 with
 * job->refused set. */
static int take_typed_hook(lua_State *L, load_job_t *job, size_t i)
{
    const char *hook = hook_names[i].name;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int mt = MT_NONE;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (mt = MT__COUNT - 1; mt > MT_NONE; mt--)
                if (strcmp(lua_tostring(L, -2), msg_type_name((msg_type_t)mt)) == 0)
                    break;
        if (mt == MT_NONE || mt == MT_REGISTER || mt == MT_UNREGISTER) {
            snprintf(job->err, job->errlen, "%s: %s: the keys of a table of hooks are message types "
                     "(request, response, error, event), not %s", job->p->path, hook,
                     lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2));
            job->refused = true;
            return -1;
        }
        if (lua_type(L, -1) != LUA_TFUNCTION) {
            snprintf(job->err, job->errlen, "%s: %s.%s must be a function, not a %s", job->p->path,
                     hook, msg_type_name((msg_type_t)mt), luaL_typename(L, -1));
            job->refused = true;
            return -1;
        }
        job->refs[i][mt] = luaL_ref(L, LUA_REGISTRYINDEX);      /* pops the function */
        job->hooks |= hook_names[i].bit;
    }
    lua_pop(L, 1);
    return 0;
}

/* Runs the file and takes its hooks from the globals table with rawget
 * (a strict-mode __index on _G must not run here, nor later: the hooks are
 * called through these refs, never looked up again). */
static int load_body(lua_State *L)
{
    load_job_t *job = lua_touserdata(L, 1);
    luamsg_init(L);
    lua_json_install(L);    /* json.*, payloads and rewrites: as a Lua service's */
    make_ctx(L, job->p);
    lua_code_self_check(L);
    find_pure_functions(L, &job->pure);

    if (sandbox_load_text(L, job->text, job->len, job->p->path) < 0) {
        snprintf(job->err, job->errlen, "%s", lua_tostring(L, -1));
        job->refused = true;
        return 0;
    }
    lua_call(L, 0, 0);
    lua_pushglobaltable(L);
    for (size_t i = 0; i < HOOK_COUNT; i++) {
        lua_pushstring(L, hook_names[i].name);
        int t = lua_rawget(L, -2);
        if (t == LUA_TFUNCTION) {
            int ref = luaL_ref(L, LUA_REGISTRYINDEX);
            for (int mt = 0; mt < MT__COUNT; mt++)
                job->refs[i][mt] = ref;
            job->hooks |= hook_names[i].bit;
            continue;
        }
        if (t == LUA_TTABLE && (hook_names[i].bit & HOOKS_BY_TYPE) && take_typed_hook(L, job, i) == 0)
            continue;
        if (job->refused)
            return 0;
        lua_pop(L, 1);
        if (t != LUA_TNIL) {
            snprintf(job->err, job->errlen, "%s: %s must be a function%s, not a %s", job->p->path,
                     hook_names[i].name, (hook_names[i].bit & HOOKS_BY_TYPE)
                         ? " or a table of functions by message type" : "",
                     lua_typename(L, t));
            job->refused = true;
            return 0;
        }
    }
    if (job->hooks & HOOK_ON_OUTCOME) {
        lua_createtable(L, 0, 6);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &outcome_key);
    }
    return 0;
}

/* Loads `text` into a fresh sandbox; on success it replaces the running
 * version (its state; the caller keeps the text). */
static int load_source(policy_t *p, const char *text, size_t len, char *err, size_t errlen)
{
    char label[200];
    snprintf(label, sizeof label, "policy %s", p->path);
    sandbox_t *fresh = sandbox_new(label, p->limits);
    if (!fresh) {
        snprintf(err, errlen, "%s: out of memory", p->path);
        return -1;
    }
    load_job_t job = {.p = p, .text = text, .len = len, .err = err, .errlen = errlen};
    for (int i = 0; i < POLICY_HOOK_COUNT; i++)
        for (int mt = 0; mt < MT__COUNT; mt++)
            job.refs[i][mt] = LUA_NOREF;
    if (sandbox_protected(fresh, load_body, &job, err, errlen) < 0 || job.refused) {
        /* a limit hit while the file ran has no file:line of its own */
        if (strncmp(err, p->path, strlen(p->path)) != 0) {
            char copy[1024];
            snprintf(copy, sizeof copy, "%s", err);
            snprintf(err, errlen, "%s: %s", p->path, copy);
        }
        sandbox_free(&fresh);
        return -1;
    }
    sandbox_free(&p->sandbox);              /* the swap: one step */
    p->sandbox = fresh;
    p->hooks = job.hooks;
    memcpy(p->hook_refs, job.refs, sizeof p->hook_refs);
    memcpy(p->pure_fns, job.pure.fns, sizeof p->pure_fns);
    p->pure_fn_count = job.pure.count;
    memcpy(p->raw_fns, job.pure.raw, sizeof p->raw_fns);
    p->raw_fn_count = job.pure.raw_count;
    memset(p->not_kept, 0, sizeof p->not_kept);
    p->gc_remark = false;                   /* the fresh state has its mark */
    p->gc_looked_at = UINT64_MAX;           /* to be looked at first */
    if (p->cache)
        policy_cache_forget(p->cache);      /* decisions of the version before */
    return 0;
}

/* The file on disk no longer is the running version: since when. */
static void mark_stale(policy_t *p)
{
    if (!p->stale_since[0] && p->loaded_sha256[0] && strcmp(p->file_sha256, p->loaded_sha256) != 0)
        reply_timestamp(p->stale_since);
}

int policy_load(policy_t *p, char *err, size_t errlen)
{
    size_t len;
    char *text = sandbox_read_file(p->path, p->limits.memory_limit, &len, err, errlen);
    if (text)
        sha256_hex(text, len, p->file_sha256);
    if (!text || load_source(p, text, len, err, errlen) < 0) {
        free(text);
        p->failed_loads++;
        mark_stale(p);
        return -1;
    }
    free(p->source);
    p->source = text;
    p->source_len = len;
    p->loads++;
    p->fallback = false;
    p->stale_since[0] = '\0';
    memcpy(p->loaded_sha256, p->file_sha256, sizeof p->loaded_sha256);
    if (p->state) {
        char at[32];
        reply_timestamp(at);
        state_put_policy(p->state, p->path, text, len, p->loaded_sha256, at);
    }
    return 0;
}

int policy_start(policy_t *p, struct state *st, bool strict, char *err, size_t errlen)
{
    p->state = st;
    if (policy_load(p, err, errlen) == 0)
        return 0;
    if (strict || !st)
        return -1;
    char path[4096], sha[65], at[32], why[1024];
    size_t len = 0;
    char *text = state_load_policy(st, &len, path, sha, at);
    if (!text)
        return -1;                  /* nothing to fall back to */
    if (strcmp(path, p->path) != 0 || load_source(p, text, len, why, sizeof why) < 0) {
        log_error("policy %s: the last good version kept (%s) cannot be used either: %s", p->path,
                  path, strcmp(path, p->path) != 0 ? "it is of another file" : why);
        free(text);
        return -1;
    }
    free(p->source);
    p->source = text;
    p->source_len = len;
    p->loads++;
    p->fallback = true;
    sha256_hex(text, len, p->loaded_sha256);
    reply_timestamp(p->stale_since);
    log_error("POLICY FALLBACK: %s does not load (%s); running its last good version instead "
              "(sha256 %s, loaded %s) until the file is fixed. Start with --strict-policy to "
              "refuse to start instead.", p->path, err, p->loaded_sha256, at);
    return 1;
}

/* --- calling hooks --- */

/* Logs a hook's failure (one line: sandbox_protected made it so), at most
 * 20 lines a minute. */
static void hook_failed(policy_t *p, const char *hook, const char *err)
{
    p->hook_errors++;
    log_limited(&hook_error_limit, 20, LOG_LEVEL_WARN, "policy %s: %s() failed: %s",
                p->path, hook, err);
}

/* After a failed call: a state that panicked (a bug, never a script's
 * doing) is rebuilt from the running version's text; if that fails too
 * the broken one stays, and every hook call fails (closed, not open). */
static void recover_if_broken(policy_t *p)
{
    if (!sandbox_is_broken(p->sandbox) || !p->source)
        return;
    char err[1024];
    if (load_source(p, p->source, p->source_len, err, sizeof err) == 0)
        log_error("policy %s: its Lua state failed; started again from the running version", p->path);
    else
        log_error("policy %s: its Lua state failed and cannot start again: %s", p->path, err);
}

/* One hook call: what the body needs and what it found. */
typedef struct {
    policy_t *p;
    const envelope_t *env;
    const peer_t *peer;
    const char *name;           /* on_register / on_unregister */
    policy_verdict_t verdict;
    char *text;                 /* reason or error */
    size_t textlen;
    char **rewritten;           /* filter */
    size_t *rewritten_len;
    route_t *route;             /* route */
    bus_err_t code;             /* a refusal's code */
    const policy_outcome_t *outcome; /* on_outcome */
    policy_route_ahead_t *ahead; /* filter: route() too, in the same call, if it passes */
    bool in_route;              /* the call got to route() */
    bool watched;               /* its calls are watched for the decision cache */
    struct {
        bool impure;            /* it ran code that may store, or called a function
                                   not known to be pure */
        bool uses_registry;     /* it called ctx.has */
    } seen[2];                  /* [0] filter() or the one hook; [1] route() after filter() */
    bool route_gave_id;         /* route() returned name, instance id */
} hook_job_t;

/* False if the hook has no function for env's type (a table of hooks by
 * type without it): the call is skipped, as if it passed. */
static inline bool hook_wants(const policy_t *p, int index, const envelope_t *env)
{
    return p->hook_refs[index][env->type] != LUA_NOREF;
}

/* Pushes the hook taken at load: for a message hook, its function for the
 * message's type. */
static void push_hook(lua_State *L, const hook_job_t *job, int index)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->p->hook_refs[index][job->env ? job->env->type : MT_NONE]);
}

/* sandbox_call_watched's watcher: is the function called known to store
 * nothing? A Lua function is judged by its code (lua_code.h; once, kept
 * in the memo), a C function by its identity (pure_names, the view's
 * field reader). */
#define MEMO_MEMORY_MARGIN (256u << 10)

static void watch_call(lua_State *L, lua_Debug *ar, void *ud)
{
    hook_job_t *job = ud;
    policy_t *p = job->p;
    int top = lua_gettop(L);
    bool pure = false, settles = false;
    if (lua_getinfo(L, "f", ar)) {
        int fn = lua_gettop(L);
        const void *ptr = lua_topointer(L, fn);
        if (lua_iscfunction(L, fn)) {
            for (int i = 0; i < p->pure_fn_count && !pure; i++)
                pure = ptr == p->pure_fns[i];
            if (pure && ptr == p->pure_fns[0])
                job->seen[job->in_route].uses_registry = true;
            pure = pure || luamsg_is_reader(L, ptr);
            /* C code may walk a table raw: a payload proxy must be whole
             * by then, unless the function is known to keep to metamethods */
            settles = !pure;
            for (int i = 0; i < p->raw_fn_count && !settles; i++)
                settles = ptr == p->raw_fns[i];
        } else {
            lua_rawgetp(L, LUA_REGISTRYINDEX, &memo_key);
            lua_pushvalue(L, fn);
            if (lua_rawget(L, -2) == LUA_TBOOLEAN) {
                pure = lua_toboolean(L, -1);
            } else {
                pure = lua_code_writes_nothing(L, fn);
                /* remembered, unless that could meet the memory cap: the
                 * watch must not fail a call that would not fail unwatched */
                if (sandbox_memory_left(sandbox_of(L)) > MEMO_MEMORY_MARGIN) {
                    lua_pushvalue(L, fn);
                    lua_pushboolean(L, pure);
                    lua_rawset(L, -4);
                }
            }
        }
    }
    lua_settop(L, top);
    if (!pure) {
        /* before it runs (a Lua function is judged on entry, before it can
         * store anything): the payload whole from now on, a proxy settled,
         * so that what it stores or changes is the plain table; a failure
         * to settle (memory) is this call's */
        job->seen[job->in_route].impure = true;
        luamsg_whole_payloads(L);
    } else if (settles && luamsg_payload_pending(L)) {
        luamsg_settle(L);           /* it reads tables raw: the payload whole */
    }
}

/* Calls the hook push_hook pushed: watched, if the decision cache wants
 * to know what it does. */
static void call_hook(lua_State *L, hook_job_t *job, int nargs, int nresults)
{
    if (job->watched && job->p->gc_remark) {
        gc_mark(L);                             /* before the hook reads anything */
        job->p->gc_remark = false;
    }
    if (!job->watched) {
        lua_call(L, nargs, nresults);
        return;
    }
    sandbox_call_watched(L, nargs, nresults, watch_call, job);
    /* its first result, if a table, is read raw (a rewrite, a list of
     * names): it could be the payload's proxy */
    if (lua_type(L, -nresults) == LUA_TTABLE && luamsg_payload_pending(L))
        luamsg_settle(L);
}

/* --- the decision cache (policy_cache.h; docs/policies.md) --- */

/* The fields a decision may be keyed on: the names, and the payload as
 * far as hooks read it (luamsg_payload_key: the members they read from
 * proxies). A hook that reads anything else of a message type (msg_id,
 * msg.raw, the payload whole, ...) decides on more than a key can hold. */
#define KEYABLE ((1u << EF_TYPE) | (1u << EF_SRC) | (1u << EF_DST) | (1u << EF_ACTION) | \
                 (1u << EF_TOPIC))

/* The fields hooks read from messages of env's type, if a key can hold
 * them; -1 if not (for good: what hooks read only grows). *payload: if
 * they read msg.payload too (the key's tail, payload_key). */
static long cache_fields(const policy_t *p, const envelope_t *env, bool *payload)
{
    bool other;
    unsigned f = luamsg_fields_read(sandbox_state(p->sandbox), env->type, &other, payload);
    return other || (f & ~KEYABLE) ? -1 : (long)f;
}

/* Whether hook `index`'s decisions for env's type are looked up and kept. */
static bool cache_wanted(policy_t *p, int index, const envelope_t *env)
{
    return p->cache && !p->not_kept[index][env->type] &&
           policy_cache_worth(p->cache, pcache_class(index, env->type));
}

/* The payload's part of env's key (luamsg_payload_key), in `buf`, made
 * once for a message's lookups (filter's, then route's). */
typedef struct {
    int made;                   /* 0: not yet; 1: in tail; -1: it does not fit a key
                                   (then nothing is looked up or kept) */
    pcache_tail_t tail;
    unsigned char buf[PCACHE_KEY_MAX];
} payload_key_t;

static bool payload_key(policy_t *p, const envelope_t *env, bool payload, payload_key_t *k)
{
    if (!payload) {
        k->tail.len = 0;                    /* not read: not in the key */
        return true;
    }
    if (!k->made) {
        k->tail.bytes = k->buf;
        k->made = luamsg_payload_key(sandbox_state(p->sandbox), env, k->buf, sizeof k->buf,
                                     &k->tail.len) ? 1 : -1;
    }
    return k->made > 0;
}

/* The decision kept for hook `index` and env, if any (k: env's payload
 * key, made here if not yet). */
static bool cache_find(policy_t *p, int index, const envelope_t *env, pcache_decision_t *d,
                       payload_key_t *k)
{
    /* the collector runs only while the state allocates, inside protected
     * calls: its mark needs a look only after one */
    uint64_t calls = sandbox_calls(p->sandbox);
    if (p->gc_remark || (calls != p->gc_looked_at && gc_cleared(sandbox_state(p->sandbox)))) {
        policy_cache_forget(p->cache);          /* weak tables may read otherwise now */
        p->gc_remark = true;
        return false;
    }
    p->gc_looked_at = calls;
    bool payload;
    long f = cache_fields(p, env, &payload);
    if (f < 0) {
        /* hooks of this type read more than names (for good): no watching */
        p->not_kept[I_FILTER][env->type] = p->not_kept[I_ROUTE][env->type] = true;
        return false;
    }
    /* a payload whose decode alone would not fit a call (its budget, the
     * memory left) fails the hook that reads it: not answered from here,
     * so the limits hold as without a cache */
    if (!payload_key(p, env, payload, k) ||
        (k->tail.len && !sandbox_decode_fits(p->sandbox, env->f[EF_PAYLOAD].len)))
        return false;
    bool hit = policy_cache_get(p->cache, index, env, (unsigned)f, &k->tail,
                                registry_generation(p->registry), d);
    policy_cache_note(p->cache, pcache_class(index, env->type), hit);
    return hit;
}

/* After a watched call of hook `index` (seen: what it did): keeps its
 * decision `d` (NULL: not one to keep), or, if the call was not pure,
 * forgets everything (it may have changed what hooks read) and watches
 * this hook for this type no more. */
static void cache_after(policy_t *p, int index, const envelope_t *env, bool impure,
                        bool uses_registry, const pcache_decision_t *d)
{
    if (impure) {
        p->not_kept[index][env->type] = true;
        policy_cache_forget(p->cache);
        return;
    }
    bool payload;
    long f = cache_fields(p, env, &payload);
    payload_key_t k;
    k.made = 0;                         /* again: the call may have read more of it */
    if (f < 0)
        p->not_kept[I_FILTER][env->type] = p->not_kept[I_ROUTE][env->type] = true;
    else if (d && payload_key(p, env, payload, &k))
        policy_cache_put(p->cache, index, env, (unsigned)f, &k.tail, uses_registry,
                         registry_generation(p->registry), d);
}

/* A filter() decision as kept: pass, or a refusal with its reason. */
static bool filter_decision(const hook_job_t *job, pcache_decision_t *d)
{
    if (job->verdict != POLICY_PASS && job->verdict != POLICY_REJECT)
        return false;
    *d = (pcache_decision_t){.verdict = job->verdict, .code = job->code,
                             .text = job->verdict == POLICY_REJECT ? job->text : "",
                             .text_len = job->verdict == POLICY_REJECT ? strlen(job->text) : 0};
    return true;
}

/* A route() decision as kept: pass, or one name (no instance). */
static bool route_decision(const route_t *r, policy_verdict_t v, bool gave_id, pcache_decision_t *d)
{
    if (!(v == POLICY_PASS || (v == POLICY_DECIDED && r->count == 1 && !gave_id)))
        return false;
    *d = (pcache_decision_t){.verdict = v, .text = v == POLICY_DECIDED ? r->names[0] : "",
                             .text_len = v == POLICY_DECIDED ? strlen(r->names[0]) : 0};
    return true;
}

static policy_verdict_t filter_from(policy_t *p, const pcache_decision_t *d, char *reason,
                                    size_t reasonlen)
{
    if (d->verdict == POLICY_REJECT) {
        snprintf(reason, reasonlen, "%s", d->text);
        p->refusal_code = (bus_err_t)d->code;
    }
    return (policy_verdict_t)d->verdict;
}

static policy_verdict_t route_from(const pcache_decision_t *d, route_t *out)
{
    if (d->verdict == POLICY_DECIDED) {
        memcpy(out->names[0], d->text, d->text_len + 1);
        out->count = 1;
    }
    return (policy_verdict_t)d->verdict;
}

/* `body` in the policy's state, protected; 0 or -1 (the error in
 * job->text). A call the cache did not watch may have changed what hooks
 * read: everything kept is forgotten. */
static int protected_call(hook_job_t *job, lua_CFunction body)
{
    policy_t *p = job->p;
    lua_State *L = sandbox_state(p->sandbox);
    if (job->env)
        luamsg_will_push(L, job->watched);      /* a message hook; a proxy payload if watched */
    int rc = sandbox_protected(p->sandbox, body, job, job->text, job->textlen);
    luamsg_release(L);
    if (!job->watched && p->cache)
        policy_cache_forget(p->cache);
    return rc;
}

/* Runs `body` for `hook`; FAIL (logged, err in job->text) if it raised. */
static policy_verdict_t run_hook(hook_job_t *job, const char *hook, lua_CFunction body)
{
    policy_t *p = job->p;
    job->verdict = POLICY_PASS;
    int rc = protected_call(job, body);
    if (rc < 0) {
        job->verdict = POLICY_FAIL;
        hook_failed(p, hook, job->text);
        recover_if_broken(p);
        return POLICY_FAIL;
    }
    if (job->verdict == POLICY_FAIL)
        hook_failed(p, hook, job->text);
    if (job->verdict == POLICY_REJECT)
        p->refusal_code = job->code;
    return job->verdict;
}

/* reason from a hook's second result, or a default */
static void take_reason(lua_State *L, int index, const char *fallback, char *reason, size_t cap)
{
    const char *text = lua_type(L, index) == LUA_TSTRING ? lua_tostring(L, index) : fallback;
    snprintf(reason, cap, "%s", text);
}

/* The codes a refusal may carry (its third result): what a client can act
 * on. Anything else fails the hook, so that a typo is seen, not sent. */
static const bus_err_t refusal_codes[] = {
    ERR_DENIED, ERR_BAD_PAYLOAD, ERR_UNAVAILABLE, ERR_BUSY, ERR_LIMIT_EXCEEDED,
};

/* A refusal (false, reason [, code]) at results top-2..top: REJECT with
 * its reason and code, or FAIL for a code not in refusal_codes. */
static policy_verdict_t take_refusal(lua_State *L, hook_job_t *job, const char *hook,
                                     const char *fallback)
{
    take_reason(L, -2, fallback, job->text, job->textlen);
    job->code = ERR_DENIED;
    int t = lua_type(L, -1);
    if (t == LUA_TNIL)
        return POLICY_REJECT;
    const char *code = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    for (size_t i = 0; code && i < sizeof refusal_codes / sizeof refusal_codes[0]; i++) {
        if (strcmp(code, bus_err_name(refusal_codes[i])) == 0) {
            job->code = refusal_codes[i];
            return POLICY_REJECT;
        }
    }
    snprintf(job->text, job->textlen,
             "%s() refused with %s%s%s; a refusal's code is one of denied, bad_payload, "
             "unavailable, busy, limit_exceeded", hook, code ? "the unknown code '" : "a ",
             code ? code : lua_typename(L, t), code ? "'" : " as its code");
    return POLICY_FAIL;
}

static policy_verdict_t call_route(lua_State *L, hook_job_t *job, int view);
static policy_verdict_t route_keyed(policy_t *p, const envelope_t *env, route_t *out,
                                    char *err, size_t errlen, payload_key_t *k);

static int filter_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    luamsg_push(L, job->env);
    int view = lua_gettop(L);
    push_hook(L, job, I_FILTER);
    lua_pushvalue(L, view);
    call_hook(L, job, 1, 3);
    int t = lua_type(L, -3);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -3)) {
        job->verdict = take_refusal(L, job, "filter", "denied by policy");
    } else if (t == LUA_TTABLE) {
        *job->rewritten = luamsg_encode(L, -3, job->rewritten_len, job->text, job->textlen);
        job->verdict = *job->rewritten ? POLICY_DECIDED : POLICY_FAIL;
    } else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
        snprintf(job->text, job->textlen,
                 "filter() returned a %s; expected nothing, true, false or a table", lua_typename(L, t));
        job->verdict = POLICY_FAIL;
    }
    if (job->ahead && job->verdict == POLICY_PASS) {
        /* the message goes on unchanged and the router would call route()
         * next: here, in this call, with a budget of its own */
        lua_settop(L, view);
        sandbox_new_budget(L);
        job->in_route = true;
        job->ahead->verdict = call_route(L, job, view);
        job->ahead->taken = true;
    }
    return 0;
}

policy_verdict_t policy_filter(policy_t *p, const envelope_t *env, char **rewritten,
                               size_t *rewritten_len, char *reason, size_t reasonlen)
{
    *rewritten = NULL;
    if (!hook_wants(p, I_FILTER, env))
        return POLICY_PASS;
    hook_job_t job = {.p = p, .env = env, .text = reason, .textlen = reasonlen,
                      .rewritten = rewritten, .rewritten_len = rewritten_len};
    pcache_decision_t d;
    payload_key_t k;
    k.made = 0;
    job.watched = cache_wanted(p, I_FILTER, env);
    if (job.watched && cache_find(p, I_FILTER, env, &d, &k))
        return filter_from(p, &d, reason, reasonlen);
    policy_verdict_t v = run_hook(&job, "filter", filter_body);
    if (job.watched)
        cache_after(p, I_FILTER, env, job.seen[0].impure, job.seen[0].uses_registry,
                    filter_decision(&job, &d) ? &d : NULL);
    return v;
}

policy_verdict_t policy_filter_route(policy_t *p, const envelope_t *env, char **rewritten,
                                     size_t *rewritten_len, char *text, size_t textlen,
                                     policy_route_ahead_t *ahead)
{
    ahead->taken = false;
    ahead->route.count = 0;
    ahead->route.instance = NULL;
    if (!hook_wants(p, I_ROUTE, env))
        return policy_filter(p, env, rewritten, rewritten_len, text, textlen);
    *rewritten = NULL;
    pcache_decision_t d;
    payload_key_t k;
    k.made = 0;
    bool has_filter = hook_wants(p, I_FILTER, env);
    bool watch_filter = has_filter && cache_wanted(p, I_FILTER, env);
    if (!has_filter || (watch_filter && cache_find(p, I_FILTER, env, &d, &k))) {
        /* no filter(), or its decision kept: route() alone (it asks the
         * cache itself, with the same payload key), if it passes */
        policy_verdict_t v = has_filter ? filter_from(p, &d, text, textlen) : POLICY_PASS;
        if (v == POLICY_PASS) {
            ahead->verdict = route_keyed(p, env, &ahead->route, text, textlen, &k);
            ahead->taken = true;
        }
        return v;
    }
    bool watched = watch_filter && cache_wanted(p, I_ROUTE, env);
    hook_job_t job = {.p = p, .env = env, .text = text, .textlen = textlen, .rewritten = rewritten,
                      .rewritten_len = rewritten_len, .route = &ahead->route, .ahead = ahead,
                      .watched = watched};
    job.verdict = POLICY_PASS;
    int rc = protected_call(&job, filter_body);
    if (watched) {
        bool keep = rc == 0 && filter_decision(&job, &d);
        cache_after(p, I_FILTER, env, job.seen[0].impure, job.seen[0].uses_registry,
                    keep ? &d : NULL);
        if (job.in_route) {
            keep = rc == 0 && ahead->taken &&
                   route_decision(&ahead->route, ahead->verdict, job.route_gave_id, &d);
            cache_after(p, I_ROUTE, env, job.seen[1].impure || job.seen[0].impure,
                        job.seen[1].uses_registry, keep ? &d : NULL);
        }
    }
    if (rc < 0) {
        /* whichever hook raised failed; filter() had passed if route() ran */
        hook_failed(p, job.in_route ? "route" : "filter", text);
        recover_if_broken(p);
        if (!job.in_route)
            return POLICY_FAIL;
        ahead->taken = true;
        ahead->verdict = POLICY_FAIL;
        return POLICY_PASS;
    }
    if (job.verdict == POLICY_FAIL)
        hook_failed(p, "filter", text);
    else if (ahead->taken && ahead->verdict == POLICY_FAIL)
        hook_failed(p, "route", text);
    if (job.verdict == POLICY_REJECT)
        p->refusal_code = job.code;
    return job.verdict;
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

/* route()'s results, read raw: a returned table's __len and __index are
 * not called (a list is its array part, 1..rawlen) */
static policy_verdict_t call_route(lua_State *L, hook_job_t *job, int view)
{
    policy_t *p = job->p;
    route_t *out = job->route;
    char *err = job->text;
    size_t errlen = job->textlen;
    push_hook(L, job, I_ROUTE);
    if (view)
        lua_pushvalue(L, view);         /* filter()'s view, still of this message */
    else
        luamsg_push(L, job->env);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
    call_hook(L, job, 2, 2);
    policy_verdict_t verdict = POLICY_DECIDED;
    int t = lua_type(L, -2);
    if (t == LUA_TNIL) {
        verdict = POLICY_PASS;
    } else if (t == LUA_TSTRING) {
        if (!add_target(L, -2, out, err, errlen))
            verdict = POLICY_FAIL;
        else if (lua_type(L, -1) == LUA_TSTRING) {
            job->route_gave_id = true;
            /* route() returned name, instance id: that instance, if it holds the name */
            size_t id_len;
            const char *id = lua_tolstring(L, -1, &id_len);
            out->instance = registry_find_instance(p->registry, out->names[0],
                                                   strlen(out->names[0]), id, id_len);
        }
    } else if (t == LUA_TTABLE) {
        lua_Unsigned n = lua_rawlen(L, -2);
        for (lua_Unsigned i = 1; i <= n && verdict == POLICY_DECIDED; i++) {
            lua_rawgeti(L, -2, (lua_Integer)i);
            if (!add_target(L, -1, out, err, errlen))
                verdict = POLICY_FAIL;          /* at the 17th name at the latest */
            lua_pop(L, 1);
        }
        if (verdict == POLICY_DECIDED && out->count == 0)
            verdict = POLICY_PASS;
    } else {
        snprintf(err, errlen, "route() returned a %s; expected nothing, a name or a list of names",
                 lua_typename(L, t));
        verdict = POLICY_FAIL;
    }
    return verdict;
}

static int route_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    job->verdict = call_route(L, job, 0);
    return 0;
}

policy_verdict_t policy_route(policy_t *p, const envelope_t *env, route_t *out,
                              char *err, size_t errlen)
{
    payload_key_t k;
    k.made = 0;
    return route_keyed(p, env, out, err, errlen, &k);
}

/* policy_route, with env's payload key as far as made (k). */
static policy_verdict_t route_keyed(policy_t *p, const envelope_t *env, route_t *out,
                                    char *err, size_t errlen, payload_key_t *k)
{
    out->count = 0;
    out->instance = NULL;
    if (!hook_wants(p, I_ROUTE, env))
        return POLICY_PASS;
    hook_job_t job = {.p = p, .env = env, .text = err, .textlen = errlen, .route = out};
    pcache_decision_t d;
    job.watched = cache_wanted(p, I_ROUTE, env);
    if (job.watched && cache_find(p, I_ROUTE, env, &d, k))
        return route_from(&d, out);
    policy_verdict_t v = run_hook(&job, "route", route_body);
    if (job.watched)
        cache_after(p, I_ROUTE, env, job.seen[0].impure, job.seen[0].uses_registry,
                    route_decision(out, v, job.route_gave_id, &d) ? &d : NULL);
    return v;
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

static int authorize_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    push_hook(L, job, I_AUTHORIZE);
    luamsg_push(L, job->env);
    push_peer(L, job->peer);
    call_hook(L, job, 2, 3);
    if (lua_type(L, -3) == LUA_TBOOLEAN && !lua_toboolean(L, -3))
        job->verdict = take_refusal(L, job, "authorize", "not authorized");
    return 0;
}

policy_verdict_t policy_authorize(policy_t *p, const envelope_t *env, const peer_t *peer,
                                  char *reason, size_t reasonlen)
{
    if (!hook_wants(p, I_AUTHORIZE, env))
        return POLICY_PASS;
    hook_job_t job = {.p = p, .env = env, .peer = peer, .text = reason, .textlen = reasonlen};
    return run_hook(&job, "authorize", authorize_body);
}

static int on_register_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    push_hook(L, job, I_ON_REGISTER);
    lua_pushstring(L, job->name);
    push_peer(L, job->peer);
    call_hook(L, job, 2, 2);
    if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
        take_reason(L, -1, "name refused by policy", job->text, job->textlen);
        job->verdict = POLICY_REJECT;
    }
    return 0;
}

policy_verdict_t policy_on_register(policy_t *p, const char *name, const peer_t *peer,
                                    char *reason, size_t reasonlen)
{
    hook_job_t job = {.p = p, .name = name, .peer = peer, .text = reason, .textlen = reasonlen};
    return run_hook(&job, "on_register", on_register_body);
}

static int on_unregister_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    push_hook(L, job, I_ON_UNREGISTER);
    lua_pushstring(L, job->name);
    push_peer(L, job->peer);
    call_hook(L, job, 2, 0);
    return 0;
}

void policy_on_unregister(policy_t *p, const char *name, const peer_t *peer)
{
    char err[512];
    hook_job_t job = {.p = p, .name = name, .peer = peer, .text = err, .textlen = sizeof err};
    run_hook(&job, "on_unregister", on_unregister_body);
}

static const char *const outcome_names[] = {"ok", "error", "timeout", "gone"};

/* on_outcome(o): the state's one outcome table, filled again (a field
 * absent this time is set to nil). */
static int on_outcome_body(lua_State *L)
{
    hook_job_t *job = lua_touserdata(L, 1);
    const policy_outcome_t *o = job->outcome;
    push_hook(L, job, I_ON_OUTCOME);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &outcome_key);
    lua_pushstring(L, o->service);
    lua_setfield(L, -2, "service");
    if (o->instance)
        lua_pushlstring(L, o->instance, o->instance_len);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "instance");
    lua_pushstring(L, o->action ? o->action : "");
    lua_setfield(L, -2, "action");
    lua_pushstring(L, outcome_names[o->kind]);
    lua_setfield(L, -2, "outcome");
    if (o->code)
        lua_pushstring(L, o->code);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "code");
    lua_pushnumber(L, o->latency_ms);
    lua_setfield(L, -2, "latency_ms");
    call_hook(L, job, 1, 0);
    return 0;
}

void policy_on_outcome(policy_t *p, const policy_outcome_t *o)
{
    char err[512];
    hook_job_t job = {.p = p, .outcome = o, .text = err, .textlen = sizeof err};
    run_hook(&job, "on_outcome", on_outcome_body);
}

const char *policy_path(const policy_t *p)
{
    return p->path;
}

bool policy_is_loaded(const policy_t *p)
{
    return p->sandbox != NULL;
}

policy_counts_t policy_counts(const policy_t *p)
{
    return (policy_counts_t){p->loads, p->failed_loads, p->hook_errors,
                             p->cache ? policy_cache_hits(p->cache) : 0,
                             p->cache ? policy_cache_misses(p->cache) : 0};
}

policy_version_t policy_version(const policy_t *p)
{
    return (policy_version_t){p->file_sha256, p->loaded_sha256, p->stale_since, p->fallback};
}

const char *policy_source(const policy_t *p, size_t *len)
{
    *len = p->source_len;
    return p->source;
}
