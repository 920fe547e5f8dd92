/* lua_patterns: Lua 5.4's pattern matching (string.find, string.match,
 * string.gmatch, string.gsub) with a step budget.
 *
 * Stock Lua matches patterns in C, where the count hook never fires, so a
 * pattern such as ("a"):rep(3000):find(".-.-.-.-b") backtracks for minutes
 * inside one call. These are copies of lstrlib.c's functions that draw on a
 * counter owned by the host: every step of the matcher (each call of the
 * matcher's core function, each iteration of its loops that do not call
 * it, and a share per 32 bytes compared or scanned by the loops that
 * compare whole captures, plain substrings or long bracket classes) takes
 * one from the counter, and when it goes below zero the call raises the
 * Lua error LUA_PATTERNS_BUDGET_ERROR. Results and error messages are
 * otherwise those of stock Lua 5.4. */
#ifndef SMARTSHOP_LUA_PATTERNS_H
#define SMARTSHOP_LUA_PATTERNS_H

#include <lua.h>

#define LUA_PATTERNS_BUDGET_ERROR "instruction budget exhausted"

/* Replaces find, match, gmatch and gsub in the `string` table (already
 * opened in L, found through package.loaded or the global `string`) with
 * the budgeted versions. Each closure (and each iterator gmatch returns)
 * keeps `steps_left`, which must outlive the state; the host refills it
 * before each call into Lua. NULL means no budget. */
void lua_patterns_open(lua_State *L, long *steps_left);

#endif
