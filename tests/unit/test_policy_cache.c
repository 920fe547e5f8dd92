/* Unit tests of src/policy_cache.c (the store of kept decisions) and
 * src/lua_code.c (what a function's bytecode may store), the two parts of
 * the decision cache that policy.c relies on (docs/policies.md). */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "envelope.h"
#include "lua_code.h"
#include "policy_cache.h"

#define NAMES ((1u << EF_TYPE) | (1u << EF_SRC) | (1u << EF_DST) | (1u << EF_ACTION))

static envelope_t env_of(const char *src, const char *dst, const char *action)
{
    envelope_t env;
    memset(&env, 0, sizeof env);
    env.type = MT_REQUEST;
    const char *values[] = {"request", src, dst, action};
    env_field_t fields[] = {EF_TYPE, EF_SRC, EF_DST, EF_ACTION};
    for (int i = 0; i < 4; i++) {
        if (!values[i])
            continue;
        env.f[fields[i]].ptr = values[i];
        env.f[fields[i]].len = (uint32_t)strlen(values[i]);
        env.f[fields[i]].kind = JSON_STRING;
    }
    return env;
}

static bool lookup(policy_cache_t *c, const envelope_t *env, unsigned fields, uint64_t gen,
                   pcache_decision_t *d)
{
    return policy_cache_get(c, 0, env, fields, NULL, gen, d);
}

static void keep(policy_cache_t *c, const envelope_t *env, unsigned fields, bool registry,
                 uint64_t gen, int verdict, const char *text)
{
    pcache_decision_t d = {.verdict = verdict, .code = 7, .text = text, .text_len = strlen(text)};
    policy_cache_put(c, 0, env, fields, NULL, registry, gen, &d);
}

static void test_store(void)
{
    policy_cache_t *c = policy_cache_new();
    CHECK(c != NULL);
    pcache_decision_t d;
    envelope_t a = env_of("ui", "orders", "get");
    CHECK(!lookup(c, &a, NAMES, 0, &d));
    keep(c, &a, NAMES, false, 0, 2, "not today");
    CHECK(lookup(c, &a, NAMES, 0, &d));
    CHECK_EQ_INT(d.verdict, 2);
    CHECK_EQ_INT(d.code, 7);
    CHECK(d.text_len == 9 && strcmp(d.text, "not today") == 0);
    CHECK(lookup(c, &a, NAMES, 99, &d));            /* did not ask the registry */

    /* any other value, an absent field, another field set: another key */
    envelope_t b = env_of("ui", "orders", "put");
    CHECK(!lookup(c, &b, NAMES, 0, &d));
    envelope_t no_action = env_of("ui", "orders", NULL);
    CHECK(!lookup(c, &no_action, NAMES, 0, &d));
    CHECK(!lookup(c, &a, NAMES & ~(1u << EF_SRC), 0, &d));
    /* the field boundaries are in the key: "uio"+"rders" is not "ui"+"orders" */
    envelope_t shifted = env_of("uio", "rders", "get");
    CHECK(!lookup(c, &shifted, NAMES, 0, &d));
    envelope_t escaped = a;
    escaped.f[EF_DST].escaped = true;
    CHECK(!lookup(c, &escaped, NAMES, 0, &d));

    /* a decision that asked the registry holds while it does not change */
    keep(c, &b, NAMES, true, 5, 3, "orders-v2");
    CHECK(lookup(c, &b, NAMES, 5, &d) && d.verdict == 3);
    CHECK(!lookup(c, &b, NAMES, 6, &d));

    /* forget: everything at once */
    policy_cache_forget(c);
    CHECK(!lookup(c, &a, NAMES, 0, &d));
    uint64_t misses = policy_cache_misses(c), hits = policy_cache_hits(c);
    CHECK(hits == 3);
    CHECK(misses >= 8);

    /* another hook, the same names: another key */
    keep(c, &a, NAMES, false, 0, 1, "");
    CHECK(lookup(c, &a, NAMES, 0, &d) && d.verdict == 1);
    CHECK(!policy_cache_get(c, 1, &a, NAMES, NULL, 0, &d));
    /* a text too long is not kept, nor a key too long */
    char reason[PCACHE_TEXT_MAX + 2];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    policy_cache_forget(c);
    keep(c, &a, NAMES, false, 0, 2, reason);
    CHECK(!lookup(c, &a, NAMES, 0, &d));
    char big[PCACHE_KEY_MAX + 1];
    memset(big, 'd', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    envelope_t huge = env_of("ui", big, "get");
    keep(c, &huge, NAMES, false, 0, 1, "");
    CHECK(!lookup(c, &huge, NAMES, 0, &d));
    policy_cache_free(&c);
    CHECK(c == NULL);
}

/* Keys that land in one slot evict each other and never answer for each
 * other: found by the whole key, not the hash. */
static void test_collisions(void)
{
    policy_cache_t *c = policy_cache_new();
    envelope_t a = env_of("ui", "svc0", "get"), b;
    size_t slot = policy_cache_slot(0, &a, NAMES, NULL);
    char dst[32];
    bool found = false;
    for (int i = 1; i < 100000 && !found; i++) {
        snprintf(dst, sizeof dst, "svc%d", i);
        b = env_of("ui", dst, "get");
        found = policy_cache_slot(0, &b, NAMES, NULL) == slot;
    }
    CHECK(found);
    pcache_decision_t d = {.verdict = 1, .text = "", .text_len = 0};
    policy_cache_put(c, 0, &a, NAMES, NULL, false, 0, &d);
    CHECK(!policy_cache_get(c, 0, &b, NAMES, NULL, 0, &d));
    d.verdict = 2;
    policy_cache_put(c, 0, &b, NAMES, NULL, false, 0, &d);
    CHECK(!policy_cache_get(c, 0, &a, NAMES, NULL, 0, &d));
    CHECK(policy_cache_get(c, 0, &b, NAMES, NULL, 0, &d) && d.verdict == 2);
    policy_cache_free(&c);
}

/* Each class looks at its last hit first: alternating keys, and a key
 * that took that slot over, still get their own decisions only. */
static void test_last_hit(void)
{
    policy_cache_t *c = policy_cache_new();
    envelope_t a = env_of("ui", "orders", "get"), b = env_of("ui", "stock", "get");
    CHECK(policy_cache_slot(0, &a, NAMES, NULL) != policy_cache_slot(0, &b, NAMES, NULL));
    pcache_decision_t d = {.verdict = 1, .text = "", .text_len = 0};
    policy_cache_put(c, 0, &a, NAMES, NULL, false, 0, &d);
    d.verdict = 2;
    policy_cache_put(c, 0, &b, NAMES, NULL, false, 0, &d);
    for (int i = 0; i < 4; i++) {
        CHECK(policy_cache_get(c, 0, &a, NAMES, NULL, 0, &d) && d.verdict == 1);
        CHECK(policy_cache_get(c, 0, &a, NAMES, NULL, 0, &d) && d.verdict == 1);
        CHECK(policy_cache_get(c, 0, &b, NAMES, NULL, 0, &d) && d.verdict == 2);
    }
    /* the same names, another type: not b's decision */
    envelope_t e = b;
    e.type = MT_EVENT;
    CHECK(!policy_cache_get(c, 0, &e, NAMES, NULL, 0, &d));
    /* b's slot taken by a key that collides with it: b is gone */
    char dst[32];
    envelope_t x = b;
    bool found = false;
    for (int i = 1; i < 100000 && !found; i++) {
        snprintf(dst, sizeof dst, "svc%d", i);
        x = env_of("ui", dst, "get");
        found = policy_cache_slot(0, &x, NAMES, NULL) == policy_cache_slot(0, &b, NAMES, NULL);
    }
    CHECK(found);
    CHECK(policy_cache_get(c, 0, &b, NAMES, NULL, 0, &d));        /* b is the last hit */
    d.verdict = 3;
    policy_cache_put(c, 0, &x, NAMES, NULL, false, 0, &d);
    CHECK(!policy_cache_get(c, 0, &b, NAMES, NULL, 0, &d));
    CHECK(policy_cache_get(c, 0, &x, NAMES, NULL, 0, &d) && d.verdict == 3);
    /* forget reaches the last hit too */
    policy_cache_forget(c);
    CHECK(!policy_cache_get(c, 0, &x, NAMES, NULL, 0, &d));
    policy_cache_free(&c);
}

/* Names of every length up to past the word compares, each differing
 * from the kept one in one byte only, at every position: never its
 * decision (the compare reads each byte, none outside the name). */
static void test_every_byte(void)
{
    policy_cache_t *c = policy_cache_new();
    char kept[40], other[40];
    pcache_decision_t d = {.verdict = 1, .text = "", .text_len = 0};
    for (size_t len = 1; len < sizeof kept; len++) {
        memset(kept, 'k', len);
        kept[len] = '\0';
        envelope_t a = env_of("ui", kept, "get");
        policy_cache_forget(c);
        policy_cache_put(c, 0, &a, NAMES, NULL, false, 0, &d);
        for (size_t at = 0; at < len; at++) {
            memcpy(other, kept, len + 1);
            other[at] = 'K';
            envelope_t b = env_of("ui", other, "get");
            CHECK(!lookup(c, &b, NAMES, 0, &d));
            CHECK(lookup(c, &a, NAMES, 0, &d) && d.verdict == 1);
        }
    }
    policy_cache_free(&c);
}

/* A class whose lookups mostly miss rests, then is tried again. */
/* The tail (the payload members a hook read, luamsg_payload_key) is
 * part of the key: its bytes and its length, whole. */
static void test_tail(void)
{
    policy_cache_t *c = policy_cache_new();
    pcache_decision_t d = {.verdict = 4, .text = "", .text_len = 0}, got;
    envelope_t a = env_of("ui", "orders", "get");
    const pcache_tail_t t1 = {(const unsigned char *)"p\x04\0\0\0true", 9};
    const pcache_tail_t t1_false = {(const unsigned char *)"p\x05\0\0\0false", 10};
    const pcache_tail_t t1_prefix = {(const unsigned char *)"p\x04\0\0\0tru", 8};
    const pcache_tail_t empty = {(const unsigned char *)"", 0};
    policy_cache_put(c, 0, &a, NAMES, &t1, false, 0, &d);
    CHECK(policy_cache_get(c, 0, &a, NAMES, &t1, 0, &got) && got.verdict == 4);
    CHECK(!policy_cache_get(c, 0, &a, NAMES, &t1_false, 0, &got));
    CHECK(!policy_cache_get(c, 0, &a, NAMES, &t1_prefix, 0, &got));
    CHECK(!policy_cache_get(c, 0, &a, NAMES, NULL, 0, &got));
    CHECK(!policy_cache_get(c, 0, &a, NAMES, &empty, 0, &got));
    /* no tail and an empty one are the same key */
    d.verdict = 5;
    policy_cache_put(c, 0, &a, NAMES, NULL, false, 0, &d);
    CHECK(policy_cache_get(c, 0, &a, NAMES, &empty, 0, &got) && got.verdict == 5);
    CHECK(policy_cache_get(c, 0, &a, NAMES, &t1, 0, &got) && got.verdict == 4);
    /* a key whose names and tail exceed PCACHE_KEY_MAX is not kept */
    unsigned char big[PCACHE_KEY_MAX];
    memset(big, 'x', sizeof big);
    const pcache_tail_t too_long = {big, sizeof big};
    policy_cache_put(c, 0, &a, NAMES, &too_long, false, 0, &d);
    CHECK(!policy_cache_get(c, 0, &a, NAMES, &too_long, 0, &got));
    policy_cache_free(&c);
}

static void test_rest(void)
{
    policy_cache_t *c = policy_cache_new();
    for (int i = 0; i < 1024; i++) {
        CHECK(policy_cache_worth(c, 3));
        policy_cache_note(c, 3, i % 8 == 0);        /* 1 in 8 hits */
    }
    CHECK(!policy_cache_worth(c, 3));
    CHECK(policy_cache_worth(c, 4));                /* another class is not affected */
    int rested = 1;
    while (!policy_cache_worth(c, 3) && rested < 1000000)
        rested++;
    CHECK(rested > 60000 && rested < 70000);
    for (int i = 0; i < 1024; i++)
        policy_cache_note(c, 5, i % 2 == 0);        /* half hit: keeps on */
    CHECK(policy_cache_worth(c, 5));
    policy_cache_free(&c);
}

static const struct {
    const char *text;
    bool inner;
    bool writes_nothing;
} chunks[] = {
    {"return function(m) return m.dst end", true, true},
    {"return function(m, t) local r = t[m.action] or t[m.src] if r then return false, r end end", true, true},
    {"return function(m) local s = m.dst:sub(1, 3) .. '-' return s == 'abc-', #s end", true, true},
    {"return function(t) local n = 0 for i = 1, #t do n = n + t[i] end return n end", true, true},
    {"return function(t) for k, v in pairs(t) do if v then return k end end end", true, true},
    {"return function(f, ...) return f(...) end", true, true},
    {"return function() local t = {} return t end", true, true},       /* a fresh table, no store */
    {"return function() return function() end end", true, true},
    {"return function(m) x = m end", true, false},
    {"local u return function(m) u = m end", true, false},
    {"return function(t) t.n = 1 end", true, false},
    {"return function(t, k) t[k] = 1 end", true, false},
    {"return function(t) t[3] = 1 end", true, false},
    {"return function() return { 1, 2 } end", true, false},
    {"return function() return { a = 1 } end", true, false},            /* a store, if only into a fresh table */
    {"return function(t) table.insert(t, 1) end", true, true},          /* the call is judged, not the code */
};

static void test_lua_code(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    CHECK(lua_code_self_check(L));
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        CHECK_EQ_INT(luaL_loadstring(L, chunks[i].text), LUA_OK);
        if (chunks[i].inner)
            lua_call(L, 0, 1);
        if (lua_code_writes_nothing(L, -1) != chunks[i].writes_nothing)
            fprintf(stderr, "judged wrong: %s\n", chunks[i].text);
        CHECK(lua_code_writes_nothing(L, -1) == chunks[i].writes_nothing);
        lua_pop(L, 1);
    }
    lua_getglobal(L, "print");                      /* a C function: never */
    CHECK(!lua_code_writes_nothing(L, -1));
    lua_pushinteger(L, 3);
    CHECK(!lua_code_writes_nothing(L, -1));
    lua_pop(L, 2);
    /* code longer than the reader keeps: "may store" */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return function(a) local x = a ");
    for (int i = 0; i < 20000; i++)
        luaL_addstring(&b, "x = not x ");
    luaL_addstring(&b, "return x end");
    luaL_pushresult(&b);
    CHECK_EQ_INT(luaL_loadstring(L, lua_tostring(L, -1)), LUA_OK);
    lua_call(L, 0, 1);
    CHECK(!lua_code_writes_nothing(L, -1));
    lua_close(L);
}

int main(void)
{
    test_store();
    test_collisions();
    test_last_hit();
    test_every_byte();
    test_tail();
    test_rest();
    test_lua_code();
    return check_done("policy_cache");
}
