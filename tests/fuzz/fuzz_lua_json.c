/* fuzz_lua_json: the Lua services' JSON codec (src/lua_json.c) against
 * lua-cjson, differentially (docs/fuzzing.md).
 *
 * Each input is a JSON text. Invariants:
 *
 * - ours decodes exactly what the broker's scanner accepts as a value
 *   (json_scan_member_value), and raises (never crashes) on the rest;
 * - on such text lua-cjson decodes too, and the two trees agree: the same
 *   strings, booleans, nulls and keys; every number the same double (ours
 *   may be an integer, or a larger integer kept as its digits, where
 *   lua-cjson has a float); arrays where lua-cjson has tables with keys
 *   1..n (and ours marks even the empty ones);
 * - ours encodes its tree to text the scanner accepts, which decodes (by
 *   ours) to the same tree exactly: integer stays integer, float float,
 *   array array, big integer the same digits; and which lua-cjson decodes
 *   to the same tree as the original text (ours writes nothing lua-cjson
 *   reads differently);
 * - the send path (lua_json_encode_send, luamsg_encode_text) writes what
 *   json.encode writes, and skips the scanner only for text it accepts;
 *   with the input's bytes as a Lua string (any bytes: value and key) it
 *   sends exactly what the scanner accepts;
 * - nothing leaks, no Lua error escapes (the state is never broken). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua-cjson.h>

#include "fuzz_common.h"
#include "lua_json.h"
#include "luamsg.h"
#include "sandbox.h"

static sandbox_t *sb;

/* A number as a double, from either tree: a Lua number or ours' digits. */
static bool as_double(lua_State *L, int i, double *out)
{
    if (lua_type(L, i) == LUA_TNUMBER) {
        *out = lua_isinteger(L, i) ? (double)lua_tointeger(L, i) : lua_tonumber(L, i);
        return true;
    }
    size_t len;
    const char *raw = lua_json_raw(L, i, &len);
    if (!raw)
        return false;
    char tmp[512];
    FUZZ_ASSERT(len < sizeof tmp, "a kept number of %zu digits", len);
    memcpy(tmp, raw, len);
    tmp[len] = '\0';
    *out = strtod(tmp, NULL);
    return true;
}

static bool is_marked_array(lua_State *L, int i, int array_mt)
{
    if (!lua_getmetatable(L, i))
        return false;
    bool yes = lua_rawequal(L, -1, array_mt);
    lua_pop(L, 1);
    return yes;
}

static size_t count_keys(lua_State *L, int t)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

/* Compares the values at a and b. `strict`: both are ours (same number
 * subtypes, same arrays, same kept digits); else b is lua-cjson's. */
static void same(lua_State *L, int a, int b, bool strict, int array_mt, int depth)
{
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    luaL_checkstack(L, 8, "fuzz");
    double x, y;
    if (as_double(L, a, &x)) {
        FUZZ_ASSERT(as_double(L, b, &y), "a number vs a %s", luaL_typename(L, b));
        FUZZ_ASSERT(x == y || (isnan(x) && isnan(y)), "numbers differ: %.17g vs %.17g", x, y);
        FUZZ_ASSERT(signbit(x) == signbit(y) || x != 0, "zeros' signs differ");
        if (strict) {
            FUZZ_ASSERT(lua_type(L, a) == lua_type(L, b), "a number became a %s", luaL_typename(L, b));
            if (lua_type(L, a) == LUA_TNUMBER)
                FUZZ_ASSERT(lua_isinteger(L, a) == lua_isinteger(L, b), "an integer became a float or back");
            else {
                size_t la, lb;
                const char *ra = lua_json_raw(L, a, &la), *rb = lua_json_raw(L, b, &lb);
                FUZZ_ASSERT(la == lb && memcmp(ra, rb, la) == 0, "kept digits differ");
            }
        }
        return;
    }
    int t = lua_type(L, a);
    FUZZ_ASSERT(t == lua_type(L, b), "a %s vs a %s", lua_typename(L, t), luaL_typename(L, b));
    switch (t) {
    case LUA_TSTRING: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb2 = lua_tolstring(L, b, &lb);
        FUZZ_ASSERT(la == lb && memcmp(sa, sb2, la) == 0, "strings differ");
        return;
    }
    case LUA_TBOOLEAN:
        FUZZ_ASSERT(lua_toboolean(L, a) == lua_toboolean(L, b), "booleans differ");
        return;
    case LUA_TLIGHTUSERDATA:
        FUZZ_ASSERT(!lua_touserdata(L, a) && !lua_touserdata(L, b), "not null");
        return;
    case LUA_TTABLE: break;
    default: FUZZ_ASSERT(0, "a %s in a decoded tree", lua_typename(L, t));
    }
    FUZZ_ASSERT(depth < 100, "too deep");
    if (strict)
        FUZZ_ASSERT(is_marked_array(L, a, array_mt) == is_marked_array(L, b, array_mt),
                    "an array became an object or back");
    FUZZ_ASSERT(count_keys(L, a) == count_keys(L, b), "different key counts");
    lua_pushnil(L);
    while (lua_next(L, a)) {
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        FUZZ_ASSERT(!lua_isnil(L, -1), "a key is missing");
        same(L, -2, -1, strict, array_mt, depth + 1);
        lua_pop(L, 2);
    }
}

typedef struct {
    const char *text;
    size_t len;
    bool valid;
} job_t;

static int call_cjson_decode(lua_State *L)
{
    lua_getfield(L, lua_upvalueindex(1), "decode");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* The value at `index` through the send path: lua_json_encode_send
 * writes `expect` (json.encode's text; NULL: any), and a text it
 * vouches for (unsure = false) is one the scanner accepts; then
 * luamsg_encode_text sends exactly what the scanner accepts. */
static void check_send(lua_State *L, int index, const char *expect, size_t expect_len)
{
    lua_json_text_t t = {NULL, 0, 0, false};
    lua_pushcfunction(L, lua_json_encode_send);
    lua_pushvalue(L, index);
    lua_pushlightuserdata(L, &t);
    int ok = lua_pcall(L, 2, 0, 0) == LUA_OK;
    if (!ok)
        lua_pop(L, 1);
    FUZZ_ASSERT(ok || !expect, "the send path cannot encode what json.encode did");
    const char *why = NULL;
    bool valid = ok && json_scan_member_value(t.data, t.len, &why);
    if (ok && expect)
        FUZZ_ASSERT(t.len == expect_len && memcmp(t.data, expect, t.len) == 0,
                    "the send path wrote %.*s, json.encode %.*s", (int)t.len, t.data,
                    (int)expect_len, expect);
    if (ok && !t.unsure)
        FUZZ_ASSERT(valid, "the send path vouched for bad JSON (%s): %.*s", why, (int)t.len,
                    t.data);
    lua_json_text_free(L, &t);
    luamsg_text_t sent;
    char err[256];
    bool sent_ok = luamsg_encode_text(L, index, &sent, err, sizeof err);
    FUZZ_ASSERT(sent_ok == valid, "luamsg_encode_text %s what the scanner %s: %s",
                sent_ok ? "sent" : "refused", valid ? "accepts" : "refuses", sent_ok ? "" : err);
    luamsg_text_free(L, &sent);
}

static int body(lua_State *L)
{
    job_t *job = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.cjson");
    int cjson = lua_gettop(L);
    lua_json_install(L);
    lua_newtable(L);                                   /* find the array metatable */
    lua_pushcfunction(L, lua_json_decode);
    lua_pushliteral(L, "[]");
    lua_call(L, 1, 1);
    lua_getmetatable(L, -1);
    int array_mt = lua_gettop(L);

    lua_pushcfunction(L, lua_json_decode);
    lua_pushlstring(L, job->text, job->len);
    int ours_ok = lua_pcall(L, 1, 1, 0) == LUA_OK;
    FUZZ_ASSERT(ours_ok == job->valid, "ours %s what the scanner %s: %s",
                ours_ok ? "decoded" : "refused", job->valid ? "accepts" : "refuses",
                ours_ok ? "" : lua_tostring(L, -1));
    /* the input's bytes as a Lua string (any bytes), a value and a key */
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, job->text, job->len);
    lua_setfield(L, -2, "s");
    lua_pushlstring(L, job->text, job->len);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    check_send(L, lua_gettop(L), NULL, 0);
    lua_pop(L, 1);
    if (!ours_ok)
        return 0;
    int ours = lua_gettop(L);

    lua_pushvalue(L, cjson);
    lua_pushcclosure(L, call_cjson_decode, 1);
    lua_pushlstring(L, job->text, job->len);
    FUZZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK, "lua-cjson refused valid JSON: %s",
                lua_tostring(L, -1));
    int theirs = lua_gettop(L);
    same(L, ours, theirs, false, array_mt, 0);

    lua_pushcfunction(L, lua_json_encode);
    lua_pushvalue(L, ours);
    FUZZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK, "ours cannot encode its own tree: %s",
                lua_tostring(L, -1));
    size_t len;
    const char *again = lua_tolstring(L, -1, &len);
    const char *why = NULL;
    FUZZ_ASSERT(json_scan_member_value(again, len, &why), "ours wrote bad JSON (%s): %.*s",
                why, (int)len, again);
    int text2 = lua_gettop(L);

    lua_pushcfunction(L, lua_json_decode);
    lua_pushvalue(L, text2);
    FUZZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK, "ours cannot read what it wrote");
    same(L, ours, -1, true, array_mt, 0);
    lua_pop(L, 1);

    lua_pushvalue(L, cjson);
    lua_pushcclosure(L, call_cjson_decode, 1);
    lua_pushvalue(L, text2);
    FUZZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK, "lua-cjson cannot read what ours wrote");
    same(L, theirs, -1, false, array_mt, 0);

    /* what the broker sends (luamsg_encode_text): the same text, and
     * written unscanned only where the scanner accepts it */
    check_send(L, ours, again, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sb) {
        log_set_level(LOG_LEVEL_ERROR);
        sandbox_limits_t limits = {.memory_limit = 256u << 20, .instruction_limit = 50000000};
        sb = sandbox_new("fuzz lua_json", limits);
        lua_State *L = sb->L;
        luamsg_init(L);
        luaopen_cjson(L);                  /* the reference, unguarded */
        lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.cjson");
    }
    const char *why = NULL;
    job_t job = {(const char *)data, size, json_scan_member_value((const char *)data, size, &why)};
    char err[1024];
    int rc = sandbox_protected(sb, body, &job, err, sizeof err);
    FUZZ_ASSERT(rc == 0, "the body failed: %s", err);
    FUZZ_ASSERT(!sandbox_is_broken(sb), "a Lua error escaped");
    lua_gc(sb->L, LUA_GCCOLLECT);
    return 0;
}
