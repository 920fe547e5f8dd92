/* sandbox: a Lua state with a memory cap, an instruction budget and only
 * safe libraries. See sandbox.h for what it must never allow. */
#include "sandbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "log.h"
#include "lua_patterns.h"

/* How often (in VM instructions) the count hook checks the budget. */
#define HOOK_EVERY 1000
#define BUDGET_ERROR "instruction budget exhausted"
/* A script that logs on every message must not flood the journal. */
#define SCRIPT_LOG_LINES_PER_MINUTE 600

static void *capped_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    sandbox_t *sb = ud;
    if (!ptr)
        old_size = 0;
    if (new_size == 0) {
        free(ptr);
        sb->memory_used -= old_size;
        return NULL;
    }
    if (new_size > old_size && sb->memory_used + (new_size - old_size) > sb->limits.memory_limit)
        return NULL;            /* Lua raises "not enough memory" */
    void *grown = realloc(ptr, new_size);
    if (grown)
        sb->memory_used = sb->memory_used - old_size + new_size;
    return grown;
}

sandbox_t *sandbox_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* Once the budget is gone, every tick raises again, so that a pcall inside
 * the script cannot swallow the error and keep looping. */
static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sandbox_t *sb = sandbox_of(L);
    if (!sb->in_call)
        return;
    sb->instructions_left -= HOOK_EVERY;
    if (sb->instructions_left < 0 || sb->over_budget) {
        sb->over_budget = true;
        luaL_error(L, BUDGET_ERROR);
    }
}

/* --- what scripts may call --- */

static int log_at(lua_State *L, log_level_t level)
{
    sandbox_t *sb = sandbox_of(L);
    int n = lua_gettop(L);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&buf, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    log_limited(&sb->log_limit, SCRIPT_LOG_LINES_PER_MINUTE, level, "[%s] %s", sb->label,
                lua_tostring(L, -1));
    return 0;
}
static int log_debug_fn(lua_State *L) { return log_enabled(LOG_LEVEL_DEBUG) ? log_at(L, LOG_LEVEL_DEBUG) : 0; }
static int log_info_fn(lua_State *L) { return log_at(L, LOG_LEVEL_INFO); }
static int log_warn_fn(lua_State *L) { return log_at(L, LOG_LEVEL_WARN); }
static int log_error_fn(lua_State *L) { return log_at(L, LOG_LEVEL_ERROR); }

/* pcall and xpcall that cannot catch a budget error. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
    sandbox_t *sb = sandbox_of(L);
    if (sb->in_call && sb->instructions_left < 0)
        sb->over_budget = true;         /* also spent by pattern matching */
    if (sb->over_budget)
        return luaL_error(L, BUDGET_ERROR);
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int safe_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

static int safe_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* setmetatable that refuses __gc: Lua runs finalizers with hooks off, so
 * an endless finalizer would escape the instruction budget. */
static int safe_setmetatable(lua_State *L)
{
    if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return luaL_error(L, "finalizers (__gc) are not allowed here");
    lua_settop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, "smartshop.setmetatable");
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* now_ms(): a monotonic clock in milliseconds (os.clock is CPU time). */
static int now_ms_fn(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static void open_lib(lua_State *L, const char *name, lua_CFunction open)
{
    luaL_requiref(L, name, open, 1);
    lua_pop(L, 1);
}

static void remove_global(lua_State *L, const char *name)
{
    lua_pushnil(L);
    lua_setglobal(L, name);
}

static void remove_field(lua_State *L, const char *table, const char *field)
{
    lua_getglobal(L, table);
    lua_pushnil(L);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
}

/* os, cut down to the clock. */
static void open_safe_os(lua_State *L)
{
    luaL_requiref(L, "__os", luaopen_os, 0);
    lua_newtable(L);
    static const char *const keep[] = {"time", "clock", "date", "difftime"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        lua_getfield(L, -2, keep[i]);
        lua_setfield(L, -2, keep[i]);
    }
    lua_setglobal(L, "os");
    lua_pop(L, 1);
}

static void open_libraries(lua_State *L)
{
    open_lib(L, LUA_GNAME, luaopen_base);
    open_lib(L, LUA_STRLIBNAME, luaopen_string);
    open_lib(L, LUA_TABLIBNAME, luaopen_table);
    open_lib(L, LUA_MATHLIBNAME, luaopen_math);
    open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);
    open_safe_os(L);

    /* Base functions that reach files, compile code or hand out bytecode. */
    static const char *const unsafe[] = {"dofile", "loadfile", "load", "require",
                                         "collectgarbage"};
    for (size_t i = 0; i < sizeof unsafe / sizeof unsafe[0]; i++)
        remove_global(L, unsafe[i]);
    remove_field(L, LUA_STRLIBNAME, "dump");
    lua_pushcfunction(L, safe_pcall);
    lua_setglobal(L, "pcall");
    /* the original setmetatable, kept where scripts cannot reach it */
    lua_getglobal(L, "setmetatable");
    lua_setfield(L, LUA_REGISTRYINDEX, "smartshop.setmetatable");
    lua_pushcfunction(L, safe_setmetatable);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, now_ms_fn);
    lua_setglobal(L, "now_ms");
    lua_pushcfunction(L, safe_xpcall);
    lua_setglobal(L, "xpcall");

    /* json: lua-cjson, linked in (no require of a C module). */
    luaopen_cjson(L);
    lua_getfield(L, -1, "decode");
    lua_setfield(L, LUA_REGISTRYINDEX, SANDBOX_JSON_DECODE);
    lua_getfield(L, -1, "encode");
    lua_setfield(L, LUA_REGISTRYINDEX, SANDBOX_JSON_ENCODE);
    lua_setglobal(L, "json");

    static const luaL_Reg log_fns[] = {
        {"debug", log_debug_fn}, {"info", log_info_fn},
        {"warn", log_warn_fn},   {"error", log_error_fn},
        {NULL, NULL},
    };
    luaL_newlib(L, log_fns);
    lua_setglobal(L, "log");
    lua_pushcfunction(L, log_info_fn);
    lua_setglobal(L, "print");
    /* Lua's own warn writes to stderr unbounded once "@on": make it log.warn */
    lua_pushcfunction(L, log_warn_fn);
    lua_setglobal(L, "warn");
}

sandbox_t *sandbox_new(const char *label, sandbox_limits_t limits)
{
    sandbox_t *sb = calloc(1, sizeof *sb);
    if (!sb)
        return NULL;
    snprintf(sb->label, sizeof sb->label, "%s", label);
    sb->limits = limits;
    sb->L = lua_newstate(capped_alloc, sb);
    if (!sb->L) {
        free(sb);
        return NULL;
    }
    lua_sethook(sb->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
    open_libraries(sb->L);
    /* pattern matching runs in C, where the count hook never fires: it
     * draws on the same budget through its own step counter */
    lua_patterns_open(sb->L, &sb->instructions_left);
    return sb;
}

void sandbox_free(sandbox_t **self_p)
{
    sandbox_t *sb = *self_p;
    if (!sb)
        return;
    lua_close(sb->L);
    free(sb);
    *self_p = NULL;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_typename(L, 1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Copies a Lua error into `err` on one line: the traceback's lines joined
 * with " | " (the broker logs one line per event). */
static void one_line(char *err, size_t errlen, const char *text)
{
    size_t n = 0;
    for (const char *c = text; *c && n + 4 < errlen; c++) {
        if (*c == '\n') {
            memcpy(err + n, " | ", 3);
            n += 3;
        } else if (*c != '\t') {
            err[n++] = *c;
        }
    }
    err[n] = '\0';
}

int sandbox_call(sandbox_t *sb, int nargs, int nresults, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    int base = lua_gettop(L) - nargs;       /* the function's index */
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    sb->instructions_left = sb->limits.instruction_limit;
    sb->over_budget = false;
    sb->in_call = true;
    int status = lua_pcall(L, nargs, nresults, base);
    sb->in_call = false;
    if (sb->instructions_left < 0)
        sb->over_budget = true;         /* also spent by pattern matching */
    if (status == LUA_OK) {
        lua_remove(L, base);
        return 0;
    }
    if (sb->over_budget)
        snprintf(err, errlen, "%s: used more than %ld instructions", BUDGET_ERROR,
                 sb->limits.instruction_limit);
    else if (status == LUA_ERRMEM)
        snprintf(err, errlen, "memory limit of %zu bytes reached", sb->limits.memory_limit);
    else
        one_line(err, errlen, lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_settop(L, base - 1);
    lua_gc(L, LUA_GCCOLLECT);
    return -1;
}

int sandbox_run_file(sandbox_t *sb, const char *path, char *err, size_t errlen)
{
    if (luaL_loadfilex(sb->L, path, "t") != LUA_OK) {
        one_line(err, errlen, lua_tostring(sb->L, -1));
        lua_pop(sb->L, 1);
        return -1;
    }
    if (sandbox_call(sb, 0, 0, err, errlen) == 0)
        return 0;
    /* a limit hit while the file ran has no file:line of its own */
    if (strncmp(err, path, strlen(path)) != 0) {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", err);
        snprintf(err, errlen, "%s: %s", path, copy);
    }
    return -1;
}
