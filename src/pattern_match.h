/* pattern_match: Lua 5.4's pattern matching (string.find, string.match,
 * string.gmatch, string.gsub) with a step budget.
 *
 * Stock Lua matches patterns in C, where the count hook never fires, so a
 * pattern such as ("a"):rep(3000):find(".-.-.-.-b") backtracks for minutes
 * inside one call. This is our own matcher, written from the Lua 5.4
 * reference manual (section 6.4.1 and the four functions of 6.4) and
 * checked against the stock string library by a differential test: the
 * pattern is compiled once per call into a small array of nodes, which a
 * backtracking loop with an explicit stack of choice points runs (no C
 * recursion; at most 199 pending choice points and open captures, past
 * which the call fails with stock's "pattern too complex"). It draws on a
 * counter owned by the host: every step of the matcher (each node
 * executed, each backtrack) takes one from the counter; work on many bytes
 * at once takes one per 32 bytes compared or searched (memcmp, memchr,
 * memmem: a long literal, a back reference, a plain find), one per 8 bytes
 * looked at one by one or copied (a repetition, %b, gsub's output), and
 * one per pattern byte compiled. When the counter goes below zero the call
 * raises the Lua error PATTERN_MATCH_BUDGET_ERROR. Results and error
 * messages are otherwise those of stock Lua 5.4. */
#ifndef SMARTSHOP_PATTERN_MATCH_H
#define SMARTSHOP_PATTERN_MATCH_H

#include <lua.h>

#define PATTERN_MATCH_BUDGET_ERROR "instruction budget exhausted"

/* Replaces find, match, gmatch and gsub in the `string` table (already
 * opened in L, found through package.loaded or the global `string`) with
 * the budgeted versions. Each closure (and each iterator gmatch returns)
 * keeps `steps_left`, which must outlive the state; the host refills it
 * before each call into Lua. NULL means no budget. */
void pattern_match_open(lua_State *L, long *steps_left);

#endif
