/* sandbox: a Lua 5.4 state that cannot hurt the broker.
 *
 * Shared by policies and Lua services. Owns the state's allocator (a
 * memory cap), its instruction budget per call (a count hook, plus
 * charges for work done inside C functions), and the libraries it
 * exposes: string, table, math, utf8, a safe part of base and os, plus
 * `json` (lua-cjson's encode and decode, wrapped) and `log`. No io, no
 * os.execute, no load of files or bytecode, no require, no debug.
 *
 * The one way into Lua is sandbox_protected(): a C body run inside
 * lua_pcall under the budget. Everything a caller does with the state
 * (pushing a hook and its arguments, calling it, reading its results)
 * happens in such a body, so no Lua error (a raising metamethod, the
 * memory cap) ever escapes into the broker. Should one escape anyway (a
 * bug), the panic handler logs it, marks the state broken and jumps back
 * to the entry, which fails that one call; the owner then replaces the
 * state (sandbox_is_broken). */
#ifndef SMARTSHOP_SANDBOX_H
#define SMARTSHOP_SANDBOX_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "log.h"

/* What C work costs, in instructions. Measured on the development machine
 * (docs/lua-services.md, "Limits"): a VM instruction ~5-11 ns, a byte
 * decoded by lua-cjson or read by utf8.len ~4 ns, a copy of string.rep's
 * ~4-10 ns; the rates are that, rounded in the script's favour (a stock
 * memory bomb still meets the memory cap before the budget). */
#define SANDBOX_DECODE_BYTES_PER_UNIT 4     /* json.decode, msg.payload, msg:table() */
#define SANDBOX_SCAN_BYTES_PER_UNIT 8       /* a C loop reading a string (utf8.len, bus.json) */
#define SANDBOX_ALLOC_BYTES_PER_UNIT 128    /* every byte the state allocates (copies, buffers) */
#define SANDBOX_REPEATS_PER_UNIT 16         /* string.rep's copies, even of "" */
#define SANDBOX_FORMAT_UNITS_PER_BYTE 4     /* string.format's format string (~90 ns a %s) */
#define SANDBOX_DATE_UNITS_PER_BYTE 32      /* os.date's format (~360 ns a %c) */
#define SANDBOX_UNITS_PER_BLOCK 2           /* each block allocated */
#define SANDBOX_GC_UNITS_PER_BLOCK 1        /* each live block, when an allocation is
                                               refused (Lua then runs a full collection,
                                               O(blocks): ~10 ns a block) */

typedef struct {
    size_t memory_limit;        /* bytes; the allocator refuses past this */
    long instruction_limit;     /* VM instructions per call */
} sandbox_limits_t;

/* Told of each call a watched call makes (sandbox_call_watched): `ar` is
 * the hook's (lua_getinfo(L, "f", ar) pushes the function called). */
typedef void (*sandbox_watch_t)(lua_State *L, lua_Debug *ar, void *ud);

typedef struct sandbox {
    lua_State *L;
    char label[160];            /* "policy policies/routing.lua", for logs */
    size_t memory_used;
    size_t blocks;              /* live allocations (what a full collection walks) */
    sandbox_limits_t limits;
    long instructions_left;
    long last_used;             /* what the last sandbox_protected call spent */
    long used_before;           /* what it spent before its last sandbox_new_budget */
    size_t alloc_uncharged;     /* bytes allocated in this call, not yet charged */
    uint64_t calls;             /* sandbox_protected calls so far */
    bool over_budget;           /* the current call ran out of instructions */
    bool in_call;               /* the budget counts only inside sandbox_protected */
    bool broken;                /* Lua panicked: this state must not be used again */
    bool in_cjson;              /* lua-cjson runs: an allocation refused there would
                                   leak its malloc'd buffer (it frees it only on its
                                   own errors), so none is refused below 2x the cap */
    sandbox_watch_t watch;      /* the running sandbox_call_watched's watcher, or NULL */
    void *watch_ud;
    char refused[120];          /* what a charge refused, for the error text */
    jmp_buf *panic_jump;        /* the running sandbox_protected's way back */
    log_ratelimit_t log_limit;  /* a script's log lines: bounded, like everything */
    void (*on_enter)(lua_State *L); /* called by sandbox_protected before the body
                                   runs, outside its protection: plain C that cannot
                                   raise (luamsg.c: a view kept past its call) */
} sandbox_t;

/* A new sandboxed state. Returns NULL on allocation failure. */
sandbox_t *sandbox_new(const char *label, sandbox_limits_t limits);
void sandbox_free(sandbox_t **self_p);

/* Runs body(L) inside lua_pcall with the instruction budget refilled; the
 * body finds `ud` as a light userdata at index 1 and returns 0 (results
 * it wants kept go into `ud`, read with raw accessors: lua_rawlen,
 * lua_rawgeti, lua_rawget, never luaL_len or lua_getglobal). Returns 0, or
 * -1 with the error on one line (traceback joined by " | ") in `err`. The
 * stack is as before either way. Not re-entrant (-1 if called from inside
 * a body of the same state). */
int sandbox_protected(sandbox_t *sb, lua_CFunction body, void *ud, char *err, size_t errlen);

/* Sets the function sandbox_protected calls before each body, outside
 * its protection: plain C that cannot raise (luamsg.c). */
void sandbox_set_on_enter(sandbox_t *sb, void (*fn)(lua_State *L));

/* Inside a body that calls a second hook (policy.c: filter, then route):
 * a fresh instruction budget for it, as if it were a call of its own. */
void sandbox_new_budget(lua_State *L);

/* Inside a body: lua_call, with `watch` told of every call made until it
 * returns, the callee's own entry first (a call hook beside the count
 * hook: the budget is as for lua_call). policy.c watches for what its
 * decision cache must know (policy_cache.h). */
void sandbox_call_watched(lua_State *L, int nargs, int nresults, sandbox_watch_t watch, void *ud);

/* Inside a body, or a C function called by Lua: charges `units`
 * (instructions' worth of C work about to be done; `what` names it for
 * the error) to the call's budget; raises the budget error if that is
 * more than what is left. */
void sandbox_charge(lua_State *L, double units, const char *what);

/* Inside a body, or a C function called by Lua, before decoding `len`
 * bytes of JSON: charges the decode and raises a memory error if what it
 * could build (an upper bound from a count of its tokens) does not fit in
 * the memory left. lua-cjson must never meet the cap half way. */
void sandbox_json_decode_check(lua_State *L, const char *text, size_t len);

/* Inside a body: compiles `len` bytes of Lua text (a leading "#..." line
 * and UTF-8 BOM skipped, as lua does for files) named `path` in errors.
 * Returns 0 with the chunk pushed, or -1 with the compile error pushed
 * ("path:line: ..."). */
int sandbox_load_text(lua_State *L, const char *text, size_t len, const char *path);

/* Reads a whole file (at most `max` bytes) into a malloc'd buffer (caller
 * frees). Returns NULL with "path: why" in `err`. */
char *sandbox_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

static inline bool sandbox_is_broken(const sandbox_t *sb)
{
    return sb && sb->broken;
}

/* Its Lua state. */
static inline lua_State *sandbox_state(const sandbox_t *sb)
{
    return sb->L;
}

/* How many sandbox_protected calls the state has run: nothing in it
 * changes (the collector included) between two equal counts. */
static inline uint64_t sandbox_calls(const sandbox_t *sb)
{
    return sb->calls;
}

/* What the last sandbox_protected call spent of its budget. */
static inline long sandbox_last_used(const sandbox_t *sb)
{
    return sb->last_used;
}

/* Whether the current call ran out of instructions, and what a charge
 * last refused ("" if nothing), for error texts. */
static inline bool sandbox_over_budget(const sandbox_t *sb)
{
    return sb->over_budget;
}

static inline const char *sandbox_refusal(const sandbox_t *sb)
{
    return sb->refused;
}

/* The bytes it may still allocate under its memory cap. */
static inline size_t sandbox_memory_left(const sandbox_t *sb)
{
    return sb->limits.memory_limit > sb->memory_used ? sb->limits.memory_limit - sb->memory_used : 0;
}

/* Whether decoding `len` bytes of JSON (charged by length) could fit in a
 * call: within one call's whole budget and the bytes left. */
static inline bool sandbox_decode_fits(const sandbox_t *sb, size_t len)
{
    return (double)len / SANDBOX_DECODE_BYTES_PER_UNIT < (double)sb->limits.instruction_limit &&
           len < sandbox_memory_left(sb);
}

/* Makes now_ms() read `clock` instead of the monotonic clock, in every
 * state of the process (NULL: back to the monotonic clock). For
 * smartshop-policy, which replays recorded traffic on its recorded times. */
void sandbox_set_clock(int64_t (*clock)(void));

/* The sandbox that owns a state (from inside a C function called by Lua). */
sandbox_t *sandbox_of(lua_State *L);

#endif
