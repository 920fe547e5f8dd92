/* fuzz_patterns: our pattern matcher (src/pattern_match.c) against the
 * stock Lua 5.4 string library, on any bytes.
 *
 * One Lua state holds both sets of functions. Each input is one call:
 *
 *   byte 0   bits 0-1: find, match, gmatch (all matches), gsub
 *            bit 2:    find's plain argument (true), else none
 *            bits 3-5: the third argument of find/match/gmatch, or gsub's
 *                      max n: none, 1, 2, 0, -1, -3, #s + 1, 5
 *            bits 6-7: gsub's replacement: the string below, a table, a
 *                      function, the number 7
 *   byte 1   the pattern's length, byte 2 the replacement string's
 *            (both clamped to what is left)
 *   then     the pattern, the replacement, and the subject (the rest)
 *
 * Ours runs first with a budget; if it runs out, the input is too heavy to
 * give to stock (which has none) and is not compared. Otherwise the
 * serialized results, or the error messages, must be identical. ASan and
 * UBSan watch our matcher's reads (the subject, pattern and replacement
 * are Lua strings copied from the input). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "pattern_match.h"

#define CASE_BUDGET 100000

static lua_State *L;
static long steps_left;

static const char *const harness =
    "local names = {'find', 'match', 'gmatch', 'gsub'}\n"
    "STOCK, OURS = {}, {}\n"
    "for _, k in ipairs(names) do STOCK[k] = string[k] end\n"
    "function save_ours() for _, k in ipairs(names) do OURS[k] = string[k] end end\n"
    "local function use(set) for _, k in ipairs(names) do string[k] = set[k] end end\n"
    "local function ser(r)\n"
    "  local out = {'n=' .. r.n}\n"
    "  for i = 1, r.n do\n"
    "    local v = r[i]\n"
    "    if type(v) == 'string' then out[#out + 1] = string.format('%q', v)\n"
    "    elseif type(v) == 'number' then out[#out + 1] = math.type(v) .. ':' .. tostring(v)\n"
    "    else out[#out + 1] = type(v) .. ':' .. tostring(v) end\n"
    "  end\n"
    "  return table.concat(out, ' ')\n"
    "end\n"
    "local function gmatch_all(s, p, init)\n"
    "  local it, out = string.gmatch(s, p, init), {}\n"
    "  for _ = 1, 200 do\n"
    "    local r = table.pack(it())\n"
    "    out[#out + 1] = ser(r)\n"
    "    if r.n == 0 then break end\n"
    "  end\n"
    "  return table.concat(out, '; ')\n"
    "end\n"
    "local repl_table = {a = 'A', b = false, [''] = 'E', x = 1, [1] = 'one', [2] = true, c = {}}\n"
    "local function repl_function(...)\n"
    "  local t = table.pack(...)\n"
    "  if t[1] == 'b' then return nil end\n"
    "  if t[1] == 'c' then return {} end\n"
    "  for i = 1, t.n do t[i] = tostring(t[i]) end\n"
    "  return table.concat(t, '|')\n"
    "end\n"
    "local repls = {false, repl_table, repl_function, 7}\n"
    "function run(set, op, s, p, arg, plain, rkind, r)\n"
    "  use(set)\n"
    "  local res\n"
    "  if op == 0 then res = table.pack(pcall(string.find, s, p, arg, plain))\n"
    "  elseif op == 1 then res = table.pack(pcall(string.match, s, p, arg))\n"
    "  elseif op == 2 then res = table.pack(pcall(gmatch_all, s, p, arg))\n"
    "  else res = table.pack(pcall(string.gsub, s, p, repls[rkind + 1] or r, arg)) end\n"
    "  use(OURS)\n"
    "  return ser(res)\n"
    "end\n";

/* A fresh state for each input: everything it allocated is freed by
 * lua_close(), so libFuzzer's leak check (which runs a full LeakSanitizer
 * scan whenever an input leaves memory allocated) stays cheap, and no input
 * sees what an earlier one left behind. */
static void open_state(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, harness) != LUA_OK) {
        fprintf(stderr, "harness: %s\n", lua_tostring(L, -1));
        abort();
    }
    pattern_match_open(L, &steps_left);
    lua_getglobal(L, "save_ours");
    lua_call(L, 0, 0);
}

/* Runs the case with one set; returns a malloc'd copy of its outcome. */
static char *run_with(const char *set, int op, const char *s, size_t ls, const char *p,
                      size_t lp, long arg, int plain, int rkind, const char *r, size_t lr)
{
    lua_getglobal(L, "run");
    lua_getglobal(L, set);
    lua_pushinteger(L, op);
    lua_pushlstring(L, s, ls);
    lua_pushlstring(L, p, lp);
    if (arg == LONG_MIN)
        lua_pushnil(L);
    else
        lua_pushinteger(L, arg);
    if (plain)
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_pushinteger(L, rkind);
    lua_pushlstring(L, r, lr);
    if (lua_pcall(L, 8, 1, 0) != LUA_OK) {
        fprintf(stderr, "harness failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    char *out = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int op = data[0] & 3, plain = (data[0] >> 2) & 1, sel = (data[0] >> 3) & 7;
    int rkind = data[0] >> 6;
    size_t rest = size - 3;
    size_t lp = data[1] < rest ? data[1] : rest;
    size_t lr = data[2] < rest - lp ? data[2] : rest - lp;
    const char *p = (const char *)data + 3, *r = p + lp, *s = r + lr;
    size_t ls = rest - lp - lr;
    long args[8] = {LONG_MIN, 1, 2, 0, -1, -3, (long)ls + 1, 5};
    long arg = args[sel];

    open_state();
    steps_left = CASE_BUDGET;
    char *ours = run_with("OURS", op, s, ls, p, lp, arg, plain, rkind, r, lr);
    if (strstr(ours, PATTERN_MATCH_BUDGET_ERROR)) {
        free(ours);     /* too heavy to hand to stock */
        lua_close(L);
        return 0;
    }
    char *stock = run_with("STOCK", op, s, ls, p, lp, arg, plain, rkind, r, lr);
    if (strcmp(stock, ours) != 0) {
        fprintf(stderr, "\nfuzz_patterns: ours differs from stock\n  op %d plain %d arg %ld rkind %d\n"
                "  stock: %s\n  ours:  %s\n", op, plain, arg, rkind, stock, ours);
        abort();
    }
    free(stock);
    free(ours);
    lua_close(L);
    return 0;
}
