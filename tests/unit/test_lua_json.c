/* lua_json: the faithful codec in a real sandbox (src/lua_json.h).
 * Each case is a Lua chunk of asserts run in a fresh policy-like sandbox
 * with the codec installed; lua-cjson's behaviour on the same inputs is
 * what the cases guard against (docs/lua-services.md, "JSON fidelity"). */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "check.h"
#include "lua_json.h"
#include "luamsg.h"
#include "sandbox.h"

typedef struct {
    const char *code;
} job_t;

static int body(lua_State *L)
{
    job_t *job = lua_touserdata(L, 1);
    luamsg_init(L);
    lua_json_install(L);
    if (sandbox_load_text(L, job->code, strlen(job->code), "case") < 0)
        return lua_error(L);
    lua_call(L, 0, 0);
    return 0;
}

/* Runs `code`; returns 0, or -1 with the error printed. */
static int run(const char *code, char *err, size_t errlen)
{
    sandbox_limits_t limits = {.memory_limit = 8u << 20, .instruction_limit = 2000000};
    sandbox_t *sb = sandbox_new("test lua_json", limits);
    job_t job = {code};
    int rc = sandbox_protected(sb, body, &job, err, errlen);
    sandbox_free(&sb);
    return rc;
}

#define PASSES(code) \
    do { \
        char err_[1024]; \
        int rc_ = run(code, err_, sizeof err_); \
        if (rc_ != 0) fprintf(stderr, "  error: %s\n", err_); \
        CHECK(rc_ == 0); \
    } while (0)

#define FAILS_WITH(code, text) \
    do { \
        char err_[1024] = ""; \
        int rc_ = run(code, err_, sizeof err_); \
        CHECK(rc_ != 0); \
        if (!strstr(err_, text)) fprintf(stderr, "  expected '%s' in: %s\n", text, err_); \
        CHECK(strstr(err_, text) != NULL); \
    } while (0)

int main(void)
{
    /* empty arrays stay arrays, empty objects objects, both nested */
    PASSES("assert(json.encode(json.decode('[]')) == '[]')\n"
           "assert(json.encode(json.decode('{}')) == '{}')\n"
           "assert(json.encode(json.decode('{\"a\":[],\"b\":{},\"c\":[[]]}')):find('\"a\":%[%]'))\n"
           "assert(json.encode(json.decode('{\"c\":[[],{}]}')) == '{\"c\":[[],{}]}')\n"
           "assert(json.encode(json.array()) == '[]')\n"
           "assert(json.encode(json.array({1, 2})) == '[1,2]')\n"
           "assert(json.encode({}) == '{}')\n");
    /* integers exact within 64 bits, and beyond kept as their digits */
    PASSES("assert(math.type(json.decode('3')) == 'integer')\n"
           "assert(json.decode('9223372036854775807') == math.maxinteger)\n"
           "assert(json.decode('-9223372036854775808') == math.mininteger)\n"
           "assert(json.encode(json.decode('9007199254740993')) == '9007199254740993')\n"
           "assert(json.encode(json.decode('12345678901234567890')) == '12345678901234567890')\n"
           "assert(tostring(json.decode('12345678901234567890')) == '12345678901234567890')\n"
           "assert(json.encode(json.decode('[123456789012345678901234567890]')) == '[123456789012345678901234567890]')\n"
           "assert(json.encode(math.maxinteger) == '9223372036854775807')\n"
           /* one past each end of int64: kept as digits, not wrapped, not a float */
           "assert(math.type(json.decode('9223372036854775808')) == nil)\n"
           "assert(tostring(json.decode('9223372036854775808')) == '9223372036854775808')\n"
           "assert(json.encode(json.decode('9223372036854775808')) == '9223372036854775808')\n"
           "assert(json.encode(json.decode('-9223372036854775809')) == '-9223372036854775809')\n"
           "assert(tonumber(json.decode('12345678901234567890')) == nil)\n"
           "assert(tonumber(tostring(json.decode('12345678901234567890'))) == 12345678901234567890.0)\n"
           "assert(not pcall(function() return json.decode('12345678901234567890') + 1 end))\n"
           "assert(json.encode(json.decode('[1e400]')) == '[1e400]')\n"
           "assert(json.encode(json.decode('{\"id\":-42}')) == '{\"id\":-42}')\n");
    /* floats: shortest text that reads back the same; whole ones keep .0 */
    PASSES("assert(math.type(json.decode('3.0')) == 'float')\n"
           "assert(json.encode(json.decode('3.0')) == '3.0')\n"
           "assert(json.encode(0.1) == '0.1')\n"
           "assert(json.decode(json.encode(1/3)) == 1/3)\n"
           "assert(json.decode(json.encode(2^60 + 0.0)) == 2^60)\n"
           "assert(json.encode(json.decode('1e300')) == '1e+300')\n"
           "assert(json.encode(json.decode('-0')) == '-0.0')\n"
           "assert(json.decode('1E2') == 100.0 and math.type(json.decode('1E2')) == 'float')\n");
    /* strings: escapes both ways; '/' written plain; surrogate pairs */
    PASSES("assert(json.decode('\"a\\\\u00e9\\\\ud83d\\\\ude00\\\\n\\\\/\"') == 'a\\u{e9}\\u{1F600}\\n/')\n"
           "assert(json.encode('a/b\"\\\\\\1\\n') == '\"a/b\\\\\"\\\\\\\\\\\\u0001\\\\n\"')\n"
           "assert(json.decode(json.encode('\\u{10FFFF}x\\0y')) == '\\u{10FFFF}x\\0y')\n");
    /* null, booleans, duplicate keys (the last wins), lua-cjson's table rules */
    PASSES("assert(json.decode('null') == json.null)\n"
           "local t = json.decode('[1,null,3]') assert(t[2] == json.null and #t == 3)\n"
           "assert(json.encode(t) == '[1,null,3]')\n"
           "assert(json.decode('{\"a\":1,\"a\":2}').a == 2)\n"
           "assert(json.encode({true, false}) == '[true,false]')\n"
           "assert(json.encode({[1] = 'a', [3] = 'c'}) == '[\"a\",null,\"c\"]')\n"
           "assert(json.encode({[2] = 5}) == '{\"2\":5}' or json.encode({[2] = 5}) == '[null,5]')\n"
           "assert(json.encode({a = {b = {c = {}}}}) == '{\"a\":{\"b\":{\"c\":{}}}}')\n");
    /* a decoded document round-trips to the same text, spacing aside */
    PASSES("local s = '{\"items\":[],\"n\":18446744073709551615,\"m\":-1,\"f\":2.5,\"tags\":[\"x\"],\"o\":{}}'\n"
           "local again = json.encode(json.decode(s))\n"
           "local d1, d2 = json.decode(s), json.decode(again)\n"
           "assert(#again == #s, again)\n"
           "assert(tostring(d2.n) == '18446744073709551615' and d2.m == -1 and d2.f == 2.5)\n"
           "assert(getmetatable(d2.items) == getmetatable(d1.tags))\n");
    /* what JSON cannot hold, and bad text */
    FAILS_WITH("json.encode(0/0)", "NaN");
    FAILS_WITH("json.encode(math.huge)", "infinity");
    FAILS_WITH("json.encode({[1] = 1, [1000] = 2})", "excessively sparse");
    FAILS_WITH("json.encode({[true] = 1})", "table key that is a boolean");
    FAILS_WITH("json.encode(print)", "cannot encode a function");
    FAILS_WITH("local t = {} t.t = t json.encode(t)", "nested more than 64");
    FAILS_WITH("json.decode('[1,]')", "json.decode");
    FAILS_WITH("json.decode('\"\\\\ud800\"')", "surrogate");
    FAILS_WITH("json.decode(string.rep('[', 70) .. string.rep(']', 70))", "json.decode");
    /* the budget: a tree of shared tables stops at it, not after 2^40 nodes */
    FAILS_WITH("local t = {} for i = 1, 40 do t = {t, t} end json.encode(t)", "budget");
    /* the memory cap: a huge encode fails cleanly */
    FAILS_WITH("local s = string.rep('x', 1 << 20) local t = {} for i = 1, 12 do t[i] = s end "
               "json.encode(t)", "more than the memory left");
    return check_done("lua_json");
}
