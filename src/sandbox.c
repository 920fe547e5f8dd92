/* sandbox: a Lua state with a memory cap, an instruction budget and only
 * safe libraries. See sandbox.h for what it must never allow. */
#include "sandbox.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "log.h"
#include "pattern_match.h"

/* How often (in VM instructions) the count hook checks the budget. */
#define HOOK_EVERY 1000
#define BUDGET_ERROR "instruction budget exhausted"
/* A script that logs on every message must not flood the journal. */
#define SCRIPT_LOG_LINES_PER_MINUTE 600

/* Every byte a call allocates is charged to its budget: a copy, a buffer
 * or a concatenation runs inside one VM instruction (or one C function)
 * and would otherwise be free however long it takes. A refused
 * allocation costs what Lua does next: a full collection, then a retry. */
static void *capped_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    sandbox_t *sb = ud;
    if (!ptr)
        old_size = 0;
    if (new_size == 0) {
        if (ptr)
            sb->blocks--;
        free(ptr);
        sb->memory_used -= old_size;
        return NULL;
    }
    if (new_size > old_size) {
        size_t grow = new_size - old_size;
        bool capped = !sb->in_cjson;
        if (sb->in_call || sb->in_cjson) {
            sb->alloc_uncharged += grow;
            if (sb->alloc_uncharged >= SANDBOX_ALLOC_BYTES_PER_UNIT) {
                sb->instructions_left -= (long)(sb->alloc_uncharged / SANDBOX_ALLOC_BYTES_PER_UNIT);
                sb->alloc_uncharged %= SANDBOX_ALLOC_BYTES_PER_UNIT;
            }
            if (!ptr)
                sb->instructions_left -= SANDBOX_UNITS_PER_BLOCK;
            if (capped && sb->instructions_left < 0) {
                sb->over_budget = true;
                return NULL;        /* Lua raises; sandbox_protected reports the budget */
            }
        }
        /* inside lua-cjson (sandbox.h, in_cjson): never refused below 2x the cap */
        size_t cap = capped ? sb->limits.memory_limit : 2 * sb->limits.memory_limit;
        if (sb->memory_used + grow > cap) {
            if (sb->in_call)        /* Lua collects all, then asks again */
                sb->instructions_left -= (long)(sb->blocks * SANDBOX_GC_UNITS_PER_BLOCK);
            return NULL;            /* Lua raises "not enough memory" */
        }
    }
    void *grown = realloc(ptr, new_size);
    if (grown) {
        sb->memory_used = sb->memory_used - old_size + new_size;
        sb->blocks += !ptr;
    }
    return grown;
}

sandbox_t *sandbox_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Back to the count hook alone, after a watched call. */
static void stop_watching(lua_State *L, sandbox_t *sb)
{
    sb->watch = NULL;
    sb->watch_ud = NULL;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* The budget's hook. Once the budget is gone, every tick raises again, so
 * that a pcall inside the script cannot swallow the error and keep
 * looping. A call event comes only during sandbox_call_watched, for its
 * watcher. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    sandbox_t *sb = sandbox_of(L);
    if (ar->event != LUA_HOOKCOUNT) {
        if (sb->watch)
            sb->watch(L, ar, sb->watch_ud);
        return;
    }
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
    if (lua_istable(L, 2)) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "finalizers (__gc) are not allowed here");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, "smartshop.setmetatable");
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

static int64_t (*replay_clock)(void);

void sandbox_set_clock(int64_t (*clock)(void))
{
    replay_clock = clock;
}

/* now_ms(): a monotonic clock in milliseconds (os.clock is CPU time). */
static int now_ms_fn(lua_State *L)
{
    if (replay_clock) {
        lua_pushinteger(L, (lua_Integer)replay_clock());
        return 1;
    }
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

/* --- charging C work to the budget --- */

void sandbox_charge(lua_State *L, double units, const char *what)
{
    sandbox_t *sb = sandbox_of(L);
    if (!sb->in_call || !(units > 0))
        return;
    if (sb->over_budget || units > (double)sb->instructions_left) {
        /* instructions_left stays >= 0 so that the error's own message
         * can be allocated; over_budget makes every later tick, pcall and
         * charge of this call raise again */
        sb->over_budget = true;
        snprintf(sb->refused, sizeof sb->refused, "%s (%.3g instructions' worth)", what, units);
        luaL_error(L, "%s: %s", BUDGET_ERROR, sb->refused);
    }
    sb->instructions_left -= (long)units;
}

/* Calls the original function (upvalue 1) with this call's arguments. */
static int call_original(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* A range i..j of arguments at `first` (j defaulting to #t, t at 1), as
 * the element count it makes the function visit. */
static double range_count(lua_State *L, int first, lua_Integer i_default)
{
    lua_Integer i = luaL_optinteger(L, first, i_default);
    lua_Integer j = lua_isnoneornil(L, first + 1) ? luaL_len(L, 1) : luaL_checkinteger(L, first + 1);
    return j >= i ? (double)j - (double)i + 1 : 0;
}

/* string.rep(s, n [, sep]): n copies, even of "" (the bytes are charged
 * when its buffer is allocated) */
static int charged_rep(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n > 0)
        sandbox_charge(L, (double)n / SANDBOX_REPEATS_PER_UNIT, "string.rep");
    return call_original(L);
}

/* table.move(a1, f, e, t [, a2]): e - f + 1 moves */
static int charged_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f)
        sandbox_charge(L, (double)e - (double)f + 1, "table.move");
    return call_original(L);
}

/* table.insert(t, pos, v): shifts #t - pos elements up */
static int charged_insert(lua_State *L)
{
    if (lua_gettop(L) == 3) {
        lua_Integer pos = luaL_checkinteger(L, 2), n = luaL_len(L, 1);
        if (n >= pos)
            sandbox_charge(L, (double)n - (double)pos + 1, "table.insert");
    }
    return call_original(L);
}

/* table.remove(t, pos): shifts #t - pos elements down */
static int charged_remove(lua_State *L)
{
    if (lua_gettop(L) >= 2) {
        lua_Integer n = luaL_len(L, 1), pos = luaL_checkinteger(L, 2);
        if (n >= pos)
            sandbox_charge(L, (double)n - (double)pos + 1, "table.remove");
    }
    return call_original(L);
}

/* table.concat(t, sep, i, j) and table.unpack(t, i, j): j - i + 1 elements */
static int charged_concat(lua_State *L)
{
    sandbox_charge(L, range_count(L, 3, 1), "table.concat");
    return call_original(L);
}

static int charged_unpack(lua_State *L)
{
    sandbox_charge(L, range_count(L, 2, 1), "table.unpack");
    return call_original(L);
}

/* table.sort(t [, comp]): n log n comparisons */
static int charged_sort(lua_State *L)
{
    lua_Integer n = luaL_len(L, 1);
    if (n > 1)
        sandbox_charge(L, (double)n * log2((double)n), "table.sort");
    return call_original(L);
}

/* Functions whose C loops read their string arguments (tonumber of a
 * 60 MB string): by the bytes they are given, the first argument (a
 * format) at its own rate, upvalue 3, in units a byte: os.date's
 * conversions take ~360 ns each, string.format's ~90 ns. */
static int charged_by_length(lua_State *L)
{
    double units = 0;
    for (int i = 1, n = lua_gettop(L); i <= n; i++) {
        if (lua_type(L, i) != LUA_TSTRING)
            continue;
        double bytes = (double)lua_rawlen(L, i);
        units += i == 1 ? bytes * lua_tonumber(L, lua_upvalueindex(3)) : bytes / SANDBOX_SCAN_BYTES_PER_UNIT;
    }
    sandbox_charge(L, units, lua_tostring(L, lua_upvalueindex(2)));
    return call_original(L);
}

/* A position of Lua's string functions (negative: from the end) as 1..len. */
static double string_position(lua_Integer pos, size_t len)
{
    if (pos < 0)
        pos = (lua_Integer)len + pos + 1;
    if (pos < 1)
        return 1;
    return (double)pos > (double)len ? (double)len : (double)pos;
}

/* Functions that read s[i..j] (string.byte and utf8.codepoint: j defaults
 * to i; utf8.len: to the end): by that range, so that s:byte(k) in a loop
 * costs what it does. utf8.offset(s, n, i) walks about n characters. */
static int charged_range(lua_State *L)
{
    int kind = (int)lua_tointeger(L, lua_upvalueindex(3));   /* 0: j = i, 1: j = -1, 2: offset */
    if (lua_type(L, 1) == LUA_TSTRING) {
        size_t len = lua_rawlen(L, 1);
        double bytes;
        if (kind == 2) {
            lua_Integer n = luaL_checkinteger(L, 2);
            double walk = 4.0 * fabs((double)n);
            bytes = walk < (double)len ? walk : (double)len;
        } else {
            lua_Integer i = luaL_optinteger(L, 2, 1);
            lua_Integer j = luaL_optinteger(L, 3, kind == 0 ? i : -1);
            double from = string_position(i, len), to = string_position(j, len);
            bytes = to >= from ? to - from + 1 : 0;
        }
        sandbox_charge(L, bytes / SANDBOX_SCAN_BYTES_PER_UNIT, lua_tostring(L, lua_upvalueindex(2)));
    }
    return call_original(L);
}

static void wrap_range(lua_State *L, const char *table, const char *name, int kind)
{
    lua_getglobal(L, table);
    lua_getfield(L, -1, name);
    lua_pushfstring(L, "%s.%s", table, name);
    lua_pushinteger(L, kind);
    lua_pushcclosure(L, charged_range, 3);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

/* Replaces table.name (table NULL: the global) with `charged`, which gets
 * the original, its name (for the error) and `rate` as upvalues. */
static void wrap(lua_State *L, const char *table, const char *name, lua_CFunction charged,
                 double rate)
{
    if (table) {
        lua_getglobal(L, table);
        lua_getfield(L, -1, name);
        lua_pushfstring(L, "%s.%s", table, name);
    } else {
        lua_getglobal(L, name);
        lua_pushstring(L, name);
    }
    lua_pushnumber(L, rate);
    lua_pushcclosure(L, charged, 3);
    if (table) {
        lua_setfield(L, -2, name);
        lua_pop(L, 1);
    } else {
        lua_setglobal(L, name);
    }
}

static void wrap_field(lua_State *L, const char *table, const char *name, lua_CFunction charged)
{
    wrap(L, table, name, charged, 1.0 / SANDBOX_SCAN_BYTES_PER_UNIT);
}

/* --- json: lua-cjson's encode and decode, charged --- */

/* lua-cjson's own default nesting limit, which it then enforces */
#define ENCODE_MAX_DEPTH 1000

typedef struct {
    double nodes;               /* values cjson will visit, shared ones each time */
    double bytes;               /* an upper bound of its output buffer */
    double charged;             /* nodes already charged */
} encode_cost_t;

/* What json.encode will do with the value at `index`, walked as lua-cjson
 * walks it (raw: lua_next, no metamethods), charging as it goes so that a
 * tree of shared tables (2^40 nodes in 40 levels) stops at the budget. */
static void encode_cost(lua_State *L, int index, int depth, encode_cost_t *c)
{
    c->nodes++;
    if (c->nodes - c->charged >= 1024) {
        sandbox_charge(L, 4 * (c->nodes - c->charged), "json.encode");
        c->charged = c->nodes;
    }
    switch (lua_type(L, index)) {
    case LUA_TSTRING:
        c->bytes += 6.0 * (double)lua_rawlen(L, index) + 2;   /* cjson reserves 6 per byte */
        return;
    case LUA_TTABLE: break;
    default:
        c->bytes += 32;
        return;
    }
    if (depth >= ENCODE_MAX_DEPTH)
        return;                 /* cjson refuses deeper nesting itself */
    luaL_checkstack(L, 3, "json.encode: nesting too deep");
    index = lua_absindex(L, index);
    double items = 0, max_index = 0;
    bool array = true;
    c->bytes += 2;
    lua_pushnil(L);
    while (lua_next(L, index)) {
        items++;
        if (array && lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0) {
            double k = (double)lua_tointeger(L, -2);
            if (k > max_index)
                max_index = k;
        } else {
            array = false;
        }
        if (!array || lua_type(L, -2) == LUA_TSTRING)
            c->bytes += lua_type(L, -2) == LUA_TSTRING ? 6.0 * (double)lua_rawlen(L, -2) + 3 : 34;
        c->bytes += 1;
        encode_cost(L, -1, depth + 1, c);
        lua_pop(L, 1);
    }
    /* an array is written up to its largest index, holes as null (cjson
     * refuses arrays sparser than this itself) */
    if (array && max_index > items && !(max_index > 10 && max_index > 2 * items)) {
        c->nodes += max_index - items;
        c->bytes += 5 * (max_index - items);
    }
}

/* Calls lua-cjson's function (upvalue 1) on the value at 1 with
 * allocations never refused (in_cjson), then raises what it raised. */
static int call_cjson(lua_State *L)
{
    sandbox_t *sb = sandbox_of(L);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    bool was = sb->in_cjson;
    sb->in_cjson = true;
    int status = lua_pcall(L, 1, 1, 0);
    sb->in_cjson = was;
    if (status != LUA_OK)
        return lua_error(L);
    if (sb->memory_used > sb->limits.memory_limit) {
        lua_pop(L, 1);              /* over the cap only while lua-cjson ran: refused now */
        return luaL_error(L, "not enough memory");
    }
    if (sb->in_call && sb->instructions_left < 0) {
        sb->over_budget = true;
        return luaL_error(L, BUDGET_ERROR);
    }
    return 1;
}

/* json.encode(value): the cost first, then lua-cjson (upvalue 1), whose
 * output buffer is plain malloc: checked against the memory left. */
static int charged_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    encode_cost_t cost = {0, 0, 0};
    encode_cost(L, 1, 0, &cost);
    sandbox_charge(L, 4 * (cost.nodes - cost.charged) + cost.bytes / SANDBOX_SCAN_BYTES_PER_UNIT,
                   "json.encode");
    sandbox_t *sb = sandbox_of(L);
    double left = (double)sb->limits.memory_limit - (double)sb->memory_used;
    if (2 * cost.bytes > left)   /* the buffer, and the string made of it */
        return luaL_error(L, "json.encode: the text could take %.0f bytes, more than the "
                             "memory left (%.0f)", 2 * cost.bytes, left);
    return call_cjson(L);
}

void sandbox_json_decode_check(lua_State *L, const char *text, size_t len)
{
    sandbox_charge(L, (double)len / SANDBOX_DECODE_BYTES_PER_UNIT, "json.decode");
    /* each token may become a table slot, a table or a string: what Lua
     * allocates for it, with the doubling of growing tables, is well
     * under 128 bytes; string bytes at most once more */
    size_t tokens = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        tokens += c == '[' || c == '{' || c == ',' || c == ':' || c == '"';
    }
    sandbox_t *sb = sandbox_of(L);
    double need = 65536.0 + (double)len + 128.0 * (double)tokens;
    double left = (double)sb->limits.memory_limit - (double)sb->memory_used;
    if (need > left)
        luaL_error(L, "json.decode: %zu bytes of JSON could take %.0f bytes, more than the "
                      "memory left (%.0f)", len, need, left);
}

/* json.decode(text): checked, then guarded (states that install
 * lua_json.c replace it; luamsg.c decodes with lua_json.c). */
static int checked_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    sandbox_json_decode_check(L, text, len);
    return call_cjson(L);
}

/* `json` for scripts: encode, decode and null only (both through
 * call_cjson: see in_cjson). lua-cjson's setters
 * (decode_max_depth, encode_keep_buffer, ...) change a configuration its
 * C code trusts: decode_max_depth(1e7) lets a deep document overflow the
 * C stack. Its output buffer is freed after each encode (it is outside
 * the memory cap). */
static void open_json(lua_State *L)
{
    luaopen_cjson(L);
    int cjson = lua_gettop(L);
    lua_getfield(L, cjson, "encode_keep_buffer");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    lua_createtable(L, 0, 3);
    lua_getfield(L, cjson, "decode");
    lua_pushcclosure(L, checked_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, cjson, "encode");
    lua_pushcclosure(L, charged_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, cjson, "null");
    lua_setfield(L, -2, "null");
    lua_setglobal(L, "json");
    lua_settop(L, cjson - 1);
}

/* Runs in protection (sandbox_new): everything here allocates. */
/* --- require: the broker's own Lua library (lua/, docs/lua-library.md) --- */

#define LIBRARY_FILE_MAX (1u << 20)

/* Where the library is: $SMARTSHOP_LUA_PATH, else next to the program
 * (the build tree's lua/, or PREFIX/share/smartshop/lua when installed),
 * whichever holds smartshop/policy.lua. Never a path a script names. */
static const char *library_dir(void)
{
    static char dir[PATH_MAX];
    static bool looked;
    if (looked)
        return dir[0] ? dir : NULL;
    looked = true;
    const char *env = getenv("SMARTSHOP_LUA_PATH");
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char candidates[3][PATH_MAX] = {{0}};
    if (env && *env)
        snprintf(candidates[0], sizeof candidates[0], "%s", env);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        snprintf(candidates[1], sizeof candidates[1], "%s/../lua", exe);
        snprintf(candidates[2], sizeof candidates[2], "%s/../share/smartshop/lua", exe);
    }
    for (int i = 0; i < 3; i++) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%.4000s/smartshop/policy.lua", candidates[i]);
        if (candidates[i][0] && access(probe, R_OK) == 0 && realpath(candidates[i], dir))
            return dir;
    }
    dir[0] = '\0';
    return NULL;
}

/* Whether `name` is smartshop.a.b: dotted lowercase words, nothing else
 * (no "..", no slash: a module name never becomes a path of the script's). */
static bool module_name_ok(const char *name, size_t len)
{
    if (len < 11 || len > 128 || strncmp(name, "smartshop.", 10) != 0)
        return false;
    bool word_start = true;
    for (size_t i = 10; i < len; i++) {
        char c = name[i];
        if (c == '.') {
            if (word_start)
                return false;
            word_start = true;
        } else if ((c >= 'a' && c <= 'z') || c == '_' || (!word_start && c >= '0' && c <= '9')) {
            word_start = false;
        } else {
            return false;
        }
    }
    return !word_start;
}

/* require(name): a module of the broker's library, loaded once per state
 * as text, in the state's own globals; source files only, never C. */
static int safe_require(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    if (!module_name_ok(name, len))
        return luaL_error(L, "require: '%s' is not a module of the broker's library "
                             "(smartshop.<name>; see docs/lua-library.md)", name);
    lua_getfield(L, LUA_REGISTRYINDEX, "smartshop.loaded");
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TNIL) {
        if (lua_islightuserdata(L, -1))
            return luaL_error(L, "require: '%s' requires itself", name);
        return 1;
    }
    lua_pop(L, 1);
    const char *dir = library_dir();
    if (!dir)
        return luaL_error(L, "require: the broker's Lua library was not found (set "
                             "SMARTSHOP_LUA_PATH to the lua/ folder)");
    char path[PATH_MAX + 160];
    int n = snprintf(path, sizeof path, "%s/", dir);
    for (size_t i = 0; i < len && n < (int)sizeof path - 5; i++)
        path[n++] = name[i] == '.' ? '/' : name[i];
    snprintf(path + n, sizeof path - (size_t)n, ".lua");
    char err[256];
    size_t text_len = 0;
    char *text = sandbox_read_file(path, LIBRARY_FILE_MAX, &text_len, err, sizeof err);
    if (!text)
        return luaL_error(L, "require: no module '%s' (%s)", name, err);
    sandbox_charge(L, (double)text_len / SANDBOX_SCAN_BYTES_PER_UNIT, "require");
    int rc = sandbox_load_text(L, text, text_len, path);
    free(text);
    if (rc < 0)
        return lua_error(L);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)&safe_require);      /* loading: a cycle raises */
    lua_rawset(L, -4);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        /* not loaded: the next require tries again (and fails the same
         * way), rather than taking the marker for a cycle */
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, -4);                                 /* loaded (1 name, 2 loaded, 3 error) */
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    return 1;
}

static int open_libraries(lua_State *L)
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
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "smartshop.loaded");
    lua_pushcfunction(L, safe_require);
    lua_setglobal(L, "require");
    lua_pushcfunction(L, safe_xpcall);
    lua_setglobal(L, "xpcall");

    /* C functions whose work grows with an argument pay for it first */
    wrap_field(L, LUA_STRLIBNAME, "rep", charged_rep);
    wrap(L, LUA_STRLIBNAME, "format", charged_by_length, SANDBOX_FORMAT_UNITS_PER_BYTE);
    wrap_range(L, LUA_STRLIBNAME, "byte", 0);
    wrap_field(L, LUA_TABLIBNAME, "move", charged_move);
    wrap_field(L, LUA_TABLIBNAME, "insert", charged_insert);
    wrap_field(L, LUA_TABLIBNAME, "remove", charged_remove);
    wrap_field(L, LUA_TABLIBNAME, "concat", charged_concat);
    wrap_field(L, LUA_TABLIBNAME, "unpack", charged_unpack);
    wrap_field(L, LUA_TABLIBNAME, "sort", charged_sort);
    wrap_range(L, LUA_UTF8LIBNAME, "len", 1);
    wrap_range(L, LUA_UTF8LIBNAME, "codepoint", 0);
    wrap_range(L, LUA_UTF8LIBNAME, "offset", 2);
    wrap(L, "os", "date", charged_by_length, SANDBOX_DATE_UNITS_PER_BYTE);
    wrap(L, NULL, "tonumber", charged_by_length, 1.0 / SANDBOX_SCAN_BYTES_PER_UNIT);
    wrap(L, NULL, "rawequal", charged_by_length, 1.0 / SANDBOX_SCAN_BYTES_PER_UNIT);

    open_json(L);

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

    /* pattern matching runs in C, where the count hook never fires: it
     * draws on the same budget through its own step counter */
    pattern_match_open(L, &sandbox_of(L)->instructions_left);
    return 0;
}

static log_ratelimit_t panic_log_limit;

/* Lua calls this for an error outside any protected call, then aborts.
 * Every entry runs its body protected, so this is for a bug: log it,
 * mark the state broken and jump back to the entry, which fails its one
 * call (the owner replaces the state). Outside an entry there is nowhere
 * to go back to. */
static int on_panic(lua_State *L)
{
    sandbox_t *sb = sandbox_of(L);
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(no message)";
    log_limited(&panic_log_limit, 20, LOG_LEVEL_ERROR,
                "[%s] Lua error outside a protected call: %s; the state is dropped", sb->label, msg);
    sb->broken = true;
    if (sb->panic_jump)
        longjmp(*sb->panic_jump, 1);
    return 0;
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
    *(void **)lua_getextraspace(sb->L) = NULL;     /* luamsg's (see luamsg_init) */
    lua_atpanic(sb->L, on_panic);
    lua_sethook(sb->L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    char err[256];
    if (sandbox_protected(sb, open_libraries, NULL, err, sizeof err) < 0) {
        log_error("[%s] cannot set up the Lua state: %s", label, err);
        sandbox_free(&sb);
        return NULL;
    }
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


int sandbox_protected(sandbox_t *sb, lua_CFunction body, void *ud, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    sb->last_used = 0;
    if (sb->broken) {
        snprintf(err, errlen, "the Lua state failed earlier and is being replaced");
        return -1;
    }
    if (sb->in_call) {
        snprintf(err, errlen, "the Lua state is busy (re-entered)");
        return -1;
    }
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 3)) {        /* never raises */
        snprintf(err, errlen, "memory limit of %zu bytes reached", sb->limits.memory_limit);
        return -1;
    }
    jmp_buf jump;
    sb->panic_jump = &jump;
    if (setjmp(jump) != 0) {
        sb->panic_jump = NULL;
        sb->in_call = false;
        snprintf(err, errlen, "internal error: a Lua error escaped its protected call; the state is dropped");
        return -1;
    }
    lua_pushcfunction(L, traceback);    /* light C functions: no allocation */
    lua_pushcfunction(L, body);
    lua_pushlightuserdata(L, ud);
    sb->instructions_left = sb->limits.instruction_limit;
    sb->used_before = 0;
    sb->over_budget = false;
    sb->alloc_uncharged = 0;
    sb->refused[0] = '\0';
    if (sb->on_enter)
        sb->on_enter(L);
    sb->in_call = true;
    sb->calls++;
    int status = lua_pcall(L, 1, 0, base + 1);
    sb->in_call = false;
    if (sb->watch)
        stop_watching(L, sb);           /* a watched call that raised */
    if (sb->instructions_left < 0)
        sb->over_budget = true;         /* also spent by pattern matching and charges */
    sb->last_used = sb->used_before + sb->limits.instruction_limit -
                    (sb->instructions_left < 0 ? 0 : sb->instructions_left);
    if (status == LUA_OK) {
        lua_settop(L, base);
        sb->panic_jump = NULL;
        return 0;
    }
    if (sb->over_budget)
        snprintf(err, errlen, "%s: used more than %ld instructions%s%s", BUDGET_ERROR,
                 sb->limits.instruction_limit, sb->refused[0] ? "; refused: " : "", sb->refused);
    else if (status == LUA_ERRMEM)
        snprintf(err, errlen, "memory limit of %zu bytes reached", sb->limits.memory_limit);
    else
        one_line(err, errlen, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    lua_settop(L, base);
    lua_gc(L, LUA_GCCOLLECT);
    sb->panic_jump = NULL;
    return -1;
}

void sandbox_set_on_enter(sandbox_t *sb, void (*fn)(lua_State *L))
{
    sb->on_enter = fn;
}

void sandbox_new_budget(lua_State *L)
{
    sandbox_t *sb = sandbox_of(L);
    if (!sb->in_call)
        return;
    if (sb->over_budget || sb->instructions_left < 0) {
        sb->over_budget = true;     /* the first hook's overspending stays its own */
        luaL_error(L, BUDGET_ERROR);
    }
    sb->used_before += sb->limits.instruction_limit -
                       (sb->instructions_left < 0 ? 0 : sb->instructions_left);
    sb->instructions_left = sb->limits.instruction_limit;
}

void sandbox_call_watched(lua_State *L, int nargs, int nresults, sandbox_watch_t watch, void *ud)
{
    sandbox_t *sb = sandbox_of(L);
    sb->watch = watch;
    sb->watch_ud = ud;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT | LUA_MASKCALL, HOOK_EVERY);
    lua_call(L, nargs, nresults);
    stop_watching(L, sb);
}

int sandbox_load_text(lua_State *L, const char *text, size_t len, const char *path)
{
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        text += 3, len -= 3;
    if (len && text[0] == '#') {        /* a "#!" line: skipped, its newline kept */
        const char *nl = memchr(text, '\n', len);
        len = nl ? len - (size_t)(nl - text) : 0;
        text = nl ? nl : text;
    }
    lua_pushfstring(L, "@%s", path);
    int status = luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    return status == LUA_OK ? 0 : -1;
}

char *sandbox_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *text = malloc(cap);
    while (text) {
        n += fread(text + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= max) {
            snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
            free(text);
            fclose(f);
            return NULL;
        }
        char *grown = realloc(text, cap * 2);
        if (!grown)
            free(text);
        text = grown;
        cap *= 2;
    }
    bool failed = !text || ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "cannot read %s: %s", path, text ? strerror(errno) : "out of memory");
        free(text);
        return NULL;
    }
    *len = n;
    return text;
}
