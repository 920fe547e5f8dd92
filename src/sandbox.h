/* sandbox: a Lua 5.4 state that cannot hurt the broker.
 *
 * Shared by policies and Lua services. Owns the state's allocator (a
 * memory cap), its instruction budget per call (a count hook), and the
 * libraries it exposes: string, table, math, utf8, a safe part of base and
 * os, plus `json` (lua-cjson) and `log`. No io, no os.execute, no load of
 * files or bytecode, no require, no debug. Errors never escape: every call
 * into Lua is protected and reports a message with its traceback. */
#ifndef SMARTSHOP_SANDBOX_H
#define SMARTSHOP_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "log.h"

/* Registry keys of lua-cjson's decode and encode, kept where scripts
 * cannot replace them. */
#define SANDBOX_JSON_DECODE "smartshop.json_decode"
#define SANDBOX_JSON_ENCODE "smartshop.json_encode"

typedef struct {
    size_t memory_limit;        /* bytes; the allocator refuses past this */
    long instruction_limit;     /* VM instructions per call */
} sandbox_limits_t;

typedef struct sandbox {
    lua_State *L;
    char label[160];            /* "policy policies/routing.lua", for logs */
    size_t memory_used;
    sandbox_limits_t limits;
    long instructions_left;
    bool over_budget;           /* the current call ran out of instructions */
    bool in_call;               /* the budget counts only inside sandbox_call */
    log_ratelimit_t log_limit;  /* a script's log lines: bounded, like everything */
} sandbox_t;

/* A new sandboxed state. Returns NULL on allocation failure. */
sandbox_t *sandbox_new(const char *label, sandbox_limits_t limits);
void sandbox_free(sandbox_t **self_p);

/* Compiles and runs a Lua source file (text only) in the sandbox, under
 * the budget. Returns 0, or -1 with "file:line: error" in `err`. */
int sandbox_run_file(sandbox_t *sb, const char *path, char *err, size_t errlen);

/* Calls the function below `nargs` arguments on the stack, protected and
 * under the budget. Returns 0 with `nresults` results pushed, or -1 with
 * the error and traceback in `err` (nothing pushed). */
int sandbox_call(sandbox_t *sb, int nargs, int nresults, char *err, size_t errlen);

/* The sandbox that owns a state (from inside a C function called by Lua). */
sandbox_t *sandbox_of(lua_State *L);

#endif
