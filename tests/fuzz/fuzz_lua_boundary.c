/* fuzz_lua_boundary: the boundary between the broker's C and a policy's Lua
 * (src/sandbox.c, src/policy.c, src/luamsg.c; docs/fuzzing.md).
 *
 * Each input is decoded into a small policy: statements and results picked
 * from fragments that attack the boundary (metatables whose __len or
 * __index raise or loop, a poisoned _G, hooks that remove themselves, the
 * memory cap filled and the error swallowed, C functions asked for huge
 * work, lua-cjson's setters, shared tables, the message view kept past its
 * call, raw fuzz bytes as strings), loaded with policy_load and called
 * through every hook the broker calls, with the result readers the router
 * uses. Invariants:
 *
 * - no Lua error ever escapes a protected call: the state is never marked
 *   broken (that is the panic handler's mark), and the process never aborts;
 * - every hook call takes under 2 s of CPU (the instruction budget, charged
 *   for C work, ends it) and the state stays within its memory cap (2x
 *   while lua-cjson runs: sandbox.h, in_cjson);
 * - verdicts are in range, a refusal has a reason, a rewrite is JSON the
 *   broker's scanner accepts, a route has 1..16 valid names (and an
 *   instance only if it holds the first), and the process does not leak.
 *
 * Input: byte 0 picks the hooks defined (bit i: hook i) and the prelude
 * length; then, per fragment slot, one byte indexes a fragment table; the
 * fragment RAW takes the next byte as a length and that many bytes as a
 * Lua string. */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "envelope.h"
#include "log.h"
#include "names.h"
#include "policy.h"
#include "registry.h"
#include "sandbox.h"

#define INSTRUCTIONS 200000
#define MEMORY (2u << 20)

static const char *const statements[] = {
    "",
    "setmetatable(_G, {__index = function(_, k) error('strict: ' .. tostring(k)) end})",
    "setmetatable(_G, {__index = function() while true do end end, __newindex = function() error('ro') end})",
    "filter = nil route = nil authorize = nil on_register = nil on_unregister = nil",
    "pcall(function() local t = {} while true do t[#t + 1] = string.rep('x', 512) .. #t end end)",
    "hog = hog or {} pcall(function() while true do hog[#hog + 1] = {} end end)",
    "hog = hog or {} pcall(function() while true do hog[#hog + 1] = string.rep('y', 4000) .. #hog end end)",
    "hog = nil",
    "pcall(string.rep, '', 1 << 50)",
    "pcall(string.rep, 'ab', 1 << 40, ',')",
    "pcall(table.move, {}, 1, 1 << 40, 2)",
    "pcall(table.remove, setmetatable({}, {__len = function() return 1 << 40 end}), 1)",
    "pcall(table.insert, setmetatable({}, {__len = function() return 1 << 40 end}), 1, 1)",
    "pcall(table.concat, setmetatable({}, {__index = function() return 'a' end}), '', 1, 1 << 30)",
    "pcall(table.unpack, {}, 1, 1 << 20)",
    "pcall(table.sort, setmetatable({}, {__len = function() return 1 << 30 end, __index = function() return 1 end}))",
    "pcall(json.decode, string.rep('[', 5000) .. string.rep(']', 5000))",
    "pcall(function() local t = {} for i = 1, 30 do t = {t, t} end return json.encode(t) end)",
    "pcall(function() local t = {} t.t = t return json.encode(t) end)",
    "pcall(function() json.decode_max_depth(1e7) end)",
    "pcall(function() json.encode_max_depth(1e7) end)",
    "pcall(function() json.encode_keep_buffer(true) end)",
    "pcall(utf8.len, string.rep('a', 1 << 20))",
    "pcall(string.format, '%s%s', string.rep('q', 1 << 20), 1)",
    "while true do end",
    "error('boom')",
    "error(setmetatable({}, {__tostring = function() error('x') end}))",
    "error(setmetatable({}, {__tostring = function() while true do end end}))",
    "pcall(error)",
    "local s = msg and msg.payload",
    "local t = msg and type(msg) ~= 'string' and msg:table()",
    "kept = msg",
    "local s = kept and type(kept) ~= 'string' and kept.src",
    "for i = 1, 50 do local x = type(msg) == 'userdata' and msg.raw end",
    "for i = 1, 1000 do local x = type(msg) == 'userdata' and msg:table() end",
    "local x = tostring(setmetatable({}, {__tostring = function() while true do end end}))",
    "local x = pcall(setmetatable, {}, {__gc = function() while true do end end})",
    "local x = pcall(setmetatable, {}, setmetatable({}, {__index = function() error('gc?') end}))",
    "log.info(setmetatable({}, {__tostring = function() return string.rep('l', 1 << 16) end}))",
    "pcall(json.decode, RAW)",
    "local x = #(RAW):rep(3)",
    "pcall(function() local s = 'x' while true do s = s .. s end end)",
    "local ok = pcall(pcall, pcall, error, 'nested')",
    "pcall(string.find, string.rep('a', 3000), '.-.-.-.-b')",
    "pcall(next, {}, 'nope')",
    "pcall(rawequal, string.rep('z', 1 << 16), string.rep('z', 1 << 16))",
    "pcall(tonumber, string.rep('9', 1 << 16))",
    "pcall(os.date, string.rep('%c', 1000))",
    /* the payload proxy (luamsg.c): members read, walked, kept, changed */
    "local p = type(msg) == 'userdata' and msg.payload local a = type(p) == 'table' and p.k, p.s, p.k == p.k",
    "local p = type(msg) == 'userdata' and msg.payload if type(p) == 'table' then for k, v in pairs(p) do end end",
    "local p = type(msg) == 'userdata' and msg.payload if type(p) == 'table' then kept_p = p end",
    "local p = kept_p if type(p) == 'table' then local n = #p for k in next, p do n = n + 1 end local s = p.s end",
    "local p = type(msg) == 'userdata' and msg.payload if type(p) == 'table' then p.s = nil p.k = p.s end",
    "local p = type(msg) == 'userdata' and msg.payload local x = type(p) == 'table' and (rawlen(p) + #p)",
    "local p = type(msg) == 'userdata' and msg.payload local x = type(p) == 'table' and json.encode(p)",
    "local p = type(msg) == 'userdata' and msg.payload local x = type(p) == 'table' and pcall(setmetatable, p, {__index = function() error('mine') end}) and p.zz",
};

static const char *const values[] = {
    "nil", "true", "false", "42", "3.5", "'svc-a'", "'svc-b'", "'broker'", "'not a name!'", "''",
    "{'svc-a', 'svc-b'}", "{}", "msg", "type(msg) == 'userdata' and msg:table() or {}", "json.null",
    "function() end", "string.rep('x', 300)", "'peer-1'", "'svc-a', 'peer-1'", "'svc-b', 'peer-1'",
    "setmetatable({}, {__len = function() error('len') end})",
    "type(msg) == 'userdata' and msg.payload",
    "setmetatable({}, {__len = function() while true do end end})",
    "setmetatable({}, {__len = function() return 3 end, __index = function() while true do end end})",
    "setmetatable({'svc-a'}, {__index = function() error('idx') end, __len = function() return 1 << 40 end})",
    "(function() local t = {'x'} for i = 1, 40 do t = {t, t} end return t end)()",
    "(function() local t = type(msg) == 'userdata' and msg:table() or {} t.payload = {1, 2, {a = 3}} return t end)()",
    "(function() local t = type(msg) == 'userdata' and msg:table() or {} t.src = 'other' return t end)()",
    "(function() local t = type(msg) == 'userdata' and msg:table() or {} for i = 1, 30 do t = {t, t} end return t end)()",
    "(function() local t = type(msg) == 'userdata' and msg:table() or {} t.payload = string.rep('\\1', 1 << 18) return t end)()",
    "(function() local t = {} for i = 1, 17 do t[i] = 'svc-a' end return t end)()",
    "(function() local t = {} t[1] = 'svc-a' t[3] = 'svc-b' return t end)()",
    "setmetatable({}, {__index = _G})",
    "false, setmetatable({}, {__tostring = function() error('reason') end})",
    "false, 'no reason at all'",
    "false, RAW",
    "RAW",
    "{RAW}",
    "RAW, RAW",
    "(function() local t = type(msg) == 'userdata' and msg:table() or {} t.payload = RAW return t end)()",
};

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

typedef struct {
    const uint8_t *p;
    size_t n;
} cursor_t;

static int next_byte(cursor_t *c)
{
    if (!c->n)
        return -1;
    c->n--;
    return *c->p++;
}

typedef struct {
    char *buf;
    size_t len, cap;
} text_t;

static void add(text_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->buf = realloc(t->buf, t->cap);
        if (!t->buf)
            abort();
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void adds(text_t *t, const char *s) { add(t, s, strlen(s)); }

/* A fragment, with each RAW replaced by a Lua string of fuzz bytes. */
static void add_fragment(text_t *t, const char *frag, cursor_t *c)
{
    for (const char *s = frag; *s;) {
        const char *raw = strstr(s, "RAW");
        if (!raw) {
            adds(t, s);
            return;
        }
        add(t, s, (size_t)(raw - s));
        int len = next_byte(c);
        adds(t, "\"");
        for (int i = 0; len > 0 && i < len; i++) {
            int b = next_byte(c);
            if (b < 0)
                break;
            char esc[8];
            snprintf(esc, sizeof esc, "\\%03d", b);
            adds(t, esc);
        }
        adds(t, "\"");
        s = raw + 3;
    }
}

static const char *const hook_heads[] = {
    "function filter(msg)\n", "function route(msg, ctx)\n", "function on_register(msg, peer)\n",
    "function on_unregister(msg, peer)\n", "function authorize(msg, peer)\n",
};

static void build_policy(cursor_t *c, text_t *t, unsigned *defined)
{
    int head = next_byte(c);
    if (head < 0)
        head = 0;
    *defined = (unsigned)head & 31;
    int prelude = (head >> 5) & 3;
    for (int i = 0; i < prelude; i++) {
        int k = next_byte(c);
        add_fragment(t, statements[(k < 0 ? 0 : k) % COUNT(statements)], c);
        adds(t, "\n");
    }
    for (int h = 0; h < 5; h++) {
        if (!(*defined & (1u << h)))
            continue;
        adds(t, hook_heads[h]);
        int shape = next_byte(c);
        if (shape < 0)
            shape = 0;
        for (int i = 0; i < (shape & 3); i++) {
            int k = next_byte(c);
            adds(t, "  ");
            add_fragment(t, statements[(k < 0 ? 0 : k) % COUNT(statements)], c);
            adds(t, "\n");
        }
        int v = next_byte(c);
        adds(t, "  return ");
        add_fragment(t, values[(v < 0 ? 0 : v) % COUNT(values)], c);
        adds(t, "\nend\n");
    }
    if (c->n && next_byte(c) & 1) {       /* the rest: statements at the top level */
        int k = next_byte(c);
        add_fragment(t, statements[(k < 0 ? 0 : k) % COUNT(statements)], c);
        adds(t, "\n");
    }
}

static int empty_body(lua_State *L)
{
    (void)L;
    return 0;
}

/* Once: the panic handler, which no input should reach, does what
 * sandbox.h says: an error raised outside any protected call (here on
 * purpose, with the entry's jump set by hand) jumps back instead of
 * aborting, marks the state broken, which then refuses every call, and
 * the state can still be closed. */
static void check_panic_handler(void)
{
    sandbox_t *sb = sandbox_new("fuzz panic check", (sandbox_limits_t){MEMORY, INSTRUCTIONS});
    FUZZ_ASSERT(sb, "sandbox_new");
    jmp_buf jump;
    sb->panic_jump = &jump;
    if (setjmp(jump) == 0) {
        lua_pushliteral(sb->L, "raised outside a protected call on purpose");
        lua_error(sb->L);
        FUZZ_ASSERT(0, "lua_error returned");
    }
    sb->panic_jump = NULL;
    FUZZ_ASSERT(sandbox_is_broken(sb), "a panic did not mark the state broken");
    char err[256];
    FUZZ_ASSERT(sandbox_protected(sb, empty_body, NULL, err, sizeof err) < 0, "a broken state ran");
    sandbox_free(&sb);
}

static registry_t *registry;
static peer_t *peer;
static char policy_file[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    check_panic_handler();
    registry = registry_new();
    peer = registry_add_peer(registry, "peer-1", 6, PEER_REMOTE, -1);
    if (!peer || registry_register(registry, peer, "svc-a", 5) < 0)
        abort();
    snprintf(policy_file, sizeof policy_file, "/tmp/fuzz_lua_boundary.%d.lua", (int)getpid());
    return 0;
}

/* CPU time: the bound is on work, not on how loaded the machine is */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check_state(const policy_t *p, const char *hook, double started, const char *src)
{
    double took = now_s() - started;
    FUZZ_ASSERT(!sandbox_is_broken(p->sandbox), "a Lua error escaped in %s; policy:\n%s", hook, src);
    /* lua-cjson may overshoot while it runs (sandbox.h, in_cjson), never past 2x */
    FUZZ_ASSERT(p->sandbox->memory_used <= 2 * p->sandbox->limits.memory_limit,
                "%s: %zu bytes used", hook, p->sandbox->memory_used);
    FUZZ_ASSERT(took < 2.0, "%s took %.2f s; policy:\n%s", hook, took, src);
    FUZZ_ASSERT(!p->sandbox->in_call, "%s left the state in a call", hook);
}

static const char message[] =
    "{\"msg_id\":\"m-1\",\"type\":\"request\",\"src\":\"cli\",\"dst\":\"svc-a\",\"action\":\"do\","
    "\"payload\":{\"k\":[1,2,\"\\u00e9\"],\"s\":\"a\\/b\"},\"timestamp\":\"2024-01-01T00:00:00.000Z\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cursor_t c = {data, size};
    text_t src = {0};
    unsigned defined = 0;
    adds(&src, "");
    build_policy(&c, &src, &defined);
    FILE *f = fopen(policy_file, "w");
    if (!f)
        abort();
    fwrite(src.buf, 1, src.len, f);
    fclose(f);

    policy_t *p = policy_new(policy_file, (sandbox_limits_t){MEMORY, INSTRUCTIONS}, registry);
    char err[1024];
    if (policy_load(p, err, sizeof err) < 0) {
        FUZZ_ASSERT(err[0], "a failed load without a reason");
        policy_free(&p);
        free(src.buf);
        return 0;
    }
    FUZZ_ASSERT((p->hooks & ~defined) == 0, "hooks %x beyond those defined %x", p->hooks, defined);
    envelope_t env;
    const char *why = NULL;
    FUZZ_ASSERT(envelope_parse(&env, message, sizeof message - 1, &why) == ERR_NONE, "%s", why);

    for (int round = 0; round < 2; round++) {   /* twice: state a first call left behind */
        double t0 = now_s();
        if (policy_has(p, HOOK_AUTHORIZE)) {
            char reason[256] = "";
            policy_verdict_t v = policy_authorize(p, &env, peer, reason, sizeof reason);
            FUZZ_ASSERT(v == POLICY_PASS || v == POLICY_REJECT || v == POLICY_FAIL, "authorize %d", v);
            FUZZ_ASSERT(v == POLICY_PASS || reason[0] || v == POLICY_REJECT, "authorize without reason");
            check_state(p, "authorize", t0, src.buf);
        }
        if (policy_has(p, HOOK_FILTER)) {
            char reason[256] = "", *rewritten = NULL;
            size_t len = 0;
            t0 = now_s();
            policy_verdict_t v = policy_filter(p, &env, &rewritten, &len, reason, sizeof reason);
            FUZZ_ASSERT(v >= POLICY_PASS && v <= POLICY_FAIL, "filter %d", v);
            FUZZ_ASSERT((v == POLICY_DECIDED) == (rewritten != NULL), "filter %d, rewritten %p", v,
                        (void *)rewritten);
            if (rewritten) {
                FUZZ_ASSERT(strlen(rewritten) == len, "rewritten length");
                FUZZ_ASSERT(json_scan_member_value(rewritten, len, &why), "rewritten not JSON: %s",
                            rewritten);
                free(rewritten);
            }
            FUZZ_ASSERT(v != POLICY_FAIL || reason[0], "filter failed without a reason");
            check_state(p, "filter", t0, src.buf);
        }
        if (policy_has(p, HOOK_ROUTE)) {
            char errr[256] = "";
            route_t route;
            t0 = now_s();
            policy_verdict_t v = policy_route(p, &env, &route, errr, sizeof errr);
            FUZZ_ASSERT(v == POLICY_PASS || v == POLICY_DECIDED || v == POLICY_FAIL, "route %d", v);
            if (v == POLICY_DECIDED) {
                FUZZ_ASSERT(route.count >= 1 && route.count <= ROUTE_MAX_TARGETS, "%d targets",
                            route.count);
                for (int i = 0; i < route.count; i++)
                    FUZZ_ASSERT(name_is_valid(route.names[i], strlen(route.names[i])), "name %s",
                                route.names[i]);
                FUZZ_ASSERT(!route.instance ||
                            (route.instance == peer &&
                             peer_holds(peer, route.names[0], strlen(route.names[0]))),
                            "instance");
            }
            FUZZ_ASSERT(v != POLICY_FAIL || errr[0], "route failed without a reason");
            check_state(p, "route", t0, src.buf);
        }
        if (policy_has(p, HOOK_ON_REGISTER)) {
            char reason[256] = "";
            t0 = now_s();
            policy_verdict_t v = policy_on_register(p, "svc-new", peer, reason, sizeof reason);
            FUZZ_ASSERT(v == POLICY_PASS || v == POLICY_REJECT || v == POLICY_FAIL, "on_register %d", v);
            check_state(p, "on_register", t0, src.buf);
        }
        if (policy_has(p, HOOK_ON_UNREGISTER)) {
            t0 = now_s();
            policy_on_unregister(p, "svc-a", peer);
            check_state(p, "on_unregister", t0, src.buf);
        }
    }
    policy_free(&p);
    free(src.buf);
    return 0;
}
