/* lua_code: what a Lua function's own bytecode may do.
 *
 * Lua's C API does not show bytecode, so this reads a function's
 * precompiled form (lua_dump, stripped). The header must be exactly that
 * of this build's Lua 5.4 and the opcodes those of 5.4.0-5.4.8 (one list
 * across them); anything else reads as "may write", which only costs the
 * decision cache (policy_cache.h) its hits. A self-check on known chunks
 * (lua_code_self_check) turns the reading off for good if the library at
 * hand reads differently. */
#ifndef SMARTSHOP_LUA_CODE_H
#define SMARTSHOP_LUA_CODE_H

#include <stdbool.h>

#include <lua.h>

/* Whether the value at `idx` is a Lua function whose own code stores
 * nothing anywhere but its registers: no upvalue, global or table field
 * is set (no SETUPVAL, SETTABUP, SETTABLE, SETI, SETFIELD, SETLIST), so
 * nothing its code does outlives the call but its results. What it calls
 * is not looked at. False for C functions, for code too long to read,
 * for anything unreadable, and always once the self-check has failed. */
bool lua_code_writes_nothing(lua_State *L, int idx);

/* Compiles known chunks in L and checks that each is judged as expected;
 * false (and lua_code_writes_nothing false for good) if one is not.
 * Checks once a process; later calls return the verdict. Call inside a
 * protected call. */
bool lua_code_self_check(lua_State *L);

#endif
