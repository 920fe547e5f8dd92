/* lua_code: what a Lua function's own bytecode may do. See lua_code.h.
 * The facts used (the precompiled chunk's layout, the opcodes' numbers)
 * are those of Lua 5.4's ldump.c and lopcodes.h, the same in 5.4.0 to
 * 5.4.8. */
#include "lua_code.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"

/* The self-check's verdict, reached once (one library per process). */
static bool code_checked, code_unreadable;

/* The opcodes that store outside the function's registers. */
enum {
    OP_SETUPVAL = 10,
    OP_SETTABUP = 15,
    OP_SETTABLE = 16,
    OP_SETI = 17,
    OP_SETFIELD = 18,
    OP_SETLIST = 78,
    OP_LAST = 82,               /* OP_EXTRAARG */
};
#define OPCODE(i) ((unsigned)((i) & 0x7Fu))         /* 7 bits at 0 */

/* Functions longer than this read as "may write" (a hook is a few dozen
 * instructions; this bounds the buffer). */
#define CODE_MAX 16384
#define DUMP_CAP (64 + 4 * CODE_MAX)

/* The dump's first bytes for this build's Lua: signature, version 5.4,
 * format 0, the check data, the sizes of an instruction, an integer and
 * a number, then an integer and a number to check their encoding. */
static size_t expected_header(unsigned char *h)
{
    memcpy(h, LUA_SIGNATURE, 4);
    h[4] = 0x54;
    h[5] = 0;
    memcpy(h + 6, "\x19\x93\r\n\x1a\n", 6);
    h[12] = (unsigned char)sizeof(uint32_t);
    h[13] = (unsigned char)sizeof(lua_Integer);
    h[14] = (unsigned char)sizeof(lua_Number);
    lua_Integer i = 0x5678;
    lua_Number n = 370.5;
    memcpy(h + 15, &i, sizeof i);
    memcpy(h + 15 + sizeof i, &n, sizeof n);
    return 15 + sizeof i + sizeof n;
}

typedef struct {
    unsigned char *bytes;       /* DUMP_CAP of them */
    size_t len;
} dump_t;

/* lua_dump's writer: keeps the first DUMP_CAP bytes, then stops it. */
static int keep_head(lua_State *L, const void *p, size_t sz, void *ud)
{
    (void)L;
    dump_t *d = ud;
    size_t room = DUMP_CAP - d->len;
    size_t n = sz < room ? sz : room;
    memcpy(d->bytes + d->len, p, n);
    d->len += n;
    return d->len == DUMP_CAP;      /* nonzero: no more, thanks */
}

/* A size as the dump writes it: 7 bits a byte, most significant first,
 * the last byte marked with 0x80. */
static bool read_size(const dump_t *d, size_t *pos, size_t *out)
{
    size_t x = 0;
    for (int k = 0; k < 10; k++) {
        if (*pos >= d->len || x > (SIZE_MAX >> 7))
            return false;
        unsigned b = d->bytes[(*pos)++];
        x = (x << 7) | (b & 0x7Fu);
        if (b & 0x80u) {
            *out = x;
            return true;
        }
    }
    return false;
}

/* The main function's code in the dump, judged instruction by
 * instruction (an EXTRAARG word reads as its own opcode, harmless). */
static bool dump_writes_nothing(const dump_t *d)
{
    unsigned char header[64];
    size_t pos = expected_header(header), skip;
    if (d->len < pos || memcmp(d->bytes, header, pos) != 0)
        return false;
    pos++;                                          /* the closure's upvalue count */
    if (!read_size(d, &pos, &skip) || skip != 0)    /* source: none, stripped */
        return false;
    if (!read_size(d, &pos, &skip) || !read_size(d, &pos, &skip))
        return false;                               /* first and last line */
    pos += 3;                                       /* params, vararg, stack size */
    size_t ncode;
    if (!read_size(d, &pos, &ncode) || ncode == 0 || ncode > CODE_MAX ||
        pos + 4 * ncode > d->len)
        return false;
    for (size_t k = 0; k < ncode; k++) {
        uint32_t i;
        memcpy(&i, d->bytes + pos + 4 * k, sizeof i);
        switch (OPCODE(i)) {
        case OP_SETUPVAL: case OP_SETTABUP: case OP_SETTABLE:
        case OP_SETI: case OP_SETFIELD: case OP_SETLIST:
            return false;
        default:
            if (OPCODE(i) > OP_LAST)
                return false;
        }
    }
    return true;
}

bool lua_code_writes_nothing(lua_State *L, int idx)
{
#if LUA_VERSION_NUM != 504
    (void)L;
    (void)idx;
    return false;
#else
    if (code_unreadable || lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx))
        return false;
    dump_t d = {.bytes = malloc(DUMP_CAP), .len = 0};
    if (!d.bytes)
        return false;
    lua_pushvalue(L, idx);
    lua_dump(L, keep_head, &d, 1);
    lua_pop(L, 1);
    bool none = dump_writes_nothing(&d);
    free(d.bytes);
    return none;
#endif
}

/* Known chunks and how they must be judged: each kind of store, and code
 * that only reads. */
static const struct {
    const char *text;
    bool writes_nothing;
    bool inner;                 /* judge the function the chunk returns */
} checks[] = {
    {"local a, b = ... if a then return b[1], a.x, #a elseif b ~= a then return a end return a and b", true, false},
    {"return function(m, t) local r = t[m.dst] if r then return false, r .. '!' end end", true, true},
    {"return function(f) return f(1) end", true, true},     /* what it calls is not judged */
    {"x = 1", false, false},
    {"local t = ... t.x = 1", false, false},
    {"local t, k = ... t[k] = 1", false, false},
    {"local t = ... t[1] = 1", false, false},
    {"return {1, 2, 3}", false, false},
    {"local n = 0 return function() n = n + 1 end", false, true},
};

bool lua_code_self_check(lua_State *L)
{
    if (code_checked)
        return !code_unreadable;
    code_checked = true;
    for (size_t k = 0; k < sizeof checks / sizeof checks[0] && !code_unreadable; k++) {
        int top = lua_gettop(L);
        bool ok = luaL_loadbufferx(L, checks[k].text, strlen(checks[k].text), "=lua_code", "t") == LUA_OK;
        if (ok && checks[k].inner)
            lua_call(L, 0, 1);      /* a closure made, nothing run: cannot raise */
        if (!ok || lua_code_writes_nothing(L, -1) != checks[k].writes_nothing) {
            log_warn("this Lua library's bytecode does not read as expected (at \"%s\"); "
                     "policy decisions are not cached", checks[k].text);
            code_unreadable = true;
        }
        lua_settop(L, top);
    }
    return !code_unreadable;
}
