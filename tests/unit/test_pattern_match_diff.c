/* pattern_match, differentially: a generated corpus of patterns and
 * subjects (valid and malformed: unbalanced brackets, %b without its two
 * characters, %f without a set, captures left open or closed twice, capture
 * indexes out of range, a trailing '%') through the stock string library
 * and through ours, in the same Lua state; results and error messages must
 * be equal. Also: every escape %c, and ranges and sets around every byte,
 * over all 256 bytes; the "pattern too complex" boundary for each construct
 * that takes a choice point, and the speed of both on common patterns
 * (printed, not asserted).
 *
 * Environment: PATTERNS_DIFF_SEED=N adds a corpus from that seed (the
 * fixed one always runs), PATTERNS_DIFF_CASES=N its size (default 30000),
 * PATTERNS_BENCH_ITERATIONS=N the timing loop (default 3000, 0 = off). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"
#include "pattern_match.h"

#define FIXED_SEED 20260402
#define DEFAULT_CASES 30000
/* Our budget for one case: a case that spends it is skipped (stock, which
 * has none, could take minutes on it). */
#define CASE_BUDGET 200000

static long steps_left;

static int set_budget(lua_State *L)
{
    steps_left = (long)luaL_checkinteger(L, 1);
    return 0;
}

static const char *const harness =
    "-- The differential harness (tests/unit/test_pattern_match_diff.c runs it):\n"
    "-- random patterns and subjects through the stock functions and ours, in\n"
    "-- the same state; the serialized results or error messages must be equal.\n"
    "local STOCK, OURS = STOCK, OURS\n"
    "local R = math.random\n"
    "local function pick(t) return t[R(#t)] end\n"
    "local budget_error = BUDGET_ERROR\n"
    "\n"
    "local function ser(v)\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return string.format('%q', v) end\n"
    "  if t == 'number' then return math.type(v) .. ':' .. tostring(v) end\n"
    "  return t .. ':' .. tostring(v)\n"
    "end\n"
    "local function ser_pack(r, from)\n"
    "  local out = {'n=' .. (r.n - from + 1)}\n"
    "  for i = from, r.n do out[#out + 1] = ser(r[i]) end\n"
    "  return table.concat(out, ' ')\n"
    "end\n"
    "\n"
    "-- ---- the generator: valid and invalid patterns ---------------------------\n"
    "local lits = {'a', 'b', 'c', 'x', 'a', 'b', ' ', '\\0', '\\255', '-', ']', '^', '$', '.',\n"
    "              '*', '+', '?', '1', 'A'}\n"
    "local classes = {'%a', '%d', '%l', '%s', '%u', '%w', '%x', '%p', '%c', '%g', '%z', '%A',\n"
    "                 '%D', '%S', '%W', '%L', '%U', '%X', '%P', '%C', '%G', '%Z', '%.', '%%',\n"
    "                 '%]', '%[', '%-', '%^', '%$', '%(', '%)', '%q', '%B', '%\\0', '%*'}\n"
    "local members = {'a', 'b', 'c', 'x', 'a-c', 'b-a', '%a', '%d', '%s', '%]', '%-', '-', ']',\n"
    "                 '^', '%', 'a-%', '%%', '\\0', '\\255', '[', ' ', '0-9', 'a-', '-a', '%A',\n"
    "                 '\\128-\\255', '(', ')'}\n"
    "local function set()\n"
    "  local t = {'['}\n"
    "  if R() < 0.3 then t[#t + 1] = '^' end\n"
    "  for _ = 1, R(0, 4) do t[#t + 1] = pick(members) end\n"
    "  if R() < 0.88 then t[#t + 1] = ']' end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local quants = {'', '', '', '*', '+', '-', '?'}\n"
    "local function item(depth)\n"
    "  local r = R(100)\n"
    "  if r <= 3 then return string.char(R(0, 255)) .. pick(quants) end\n"
    "  if r <= 30 then return pick(lits) .. pick(quants) end\n"
    "  if r <= 44 then return pick(classes) .. pick(quants) end\n"
    "  if r <= 49 then return '.' .. pick(quants) end\n"
    "  if r <= 61 then return set() .. pick(quants) end\n"
    "  if r <= 71 and depth < 3 then\n"
    "    local g = {'('}\n"
    "    for _ = 1, R(0, 3) do g[#g + 1] = item(depth + 1) end\n"
    "    if R() < 0.88 then g[#g + 1] = ')' end\n"
    "    return table.concat(g)\n"
    "  end\n"
    "  if r <= 74 then return '()' end\n"
    "  if r <= 79 then\n"
    "    return '%b' .. (R() < 0.9 and pick({'()', 'ab', '[]', 'xx', 'a)', '((', ')('}) or pick({'', 'a'}))\n"
    "  end\n"
    "  if r <= 84 then return '%f' .. (R() < 0.9 and set() or pick({'a', '', '%a'})) end\n"
    "  if r <= 91 then return '%' .. pick({0, 1, 1, 1, 2, 2, 3, 9}) .. pick(quants) end\n"
    "  if r <= 94 then return '$' end\n"
    "  return pick({'%', ')', '(', '^', '[', '*', '[^', '[]', '[^]'})\n"
    "end\n"
    "local function gen_pattern()\n"
    "  local t = {}\n"
    "  if R() < 0.2 then t[1] = '^' end\n"
    "  -- a few long ones: compiled into a userdata, not the C stack\n"
    "  for _ = 1, R() < 0.05 and R(10, 40) or R(0, 6) do t[#t + 1] = item(0) end\n"
    "  if R() < 0.15 then t[#t + 1] = '$' end\n"
    "  if R() < 0.03 then t[#t + 1] = '%' end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local subject_chars = {'a', 'b', 'c', 'x', '(', ')', '[', ']', ' ', '-', '.', '%', '^', '$',\n"
    "                       '\\0', '\\255', '1', 'A', '\\n', 'a', 'b'}\n"
    "local function gen_subject(p)\n"
    "  local t = {}\n"
    "  for i = 1, R() < 0.05 and R(20, 80) or R(0, 20) do\n"
    "    local r = R()\n"
    "    if #p > 0 and r < 0.5 then\n"
    "      local k = R(#p)\n"
    "      t[i] = p:sub(k, k)\n"
    "    elseif r < 0.6 then\n"
    "      t[i] = string.char(R(0, 255))\n"
    "    else\n"
    "      t[i] = pick(subject_chars)\n"
    "    end\n"
    "  end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function gen_init(s)\n"
    "  return pick({nil, nil, 1, 2, 0, -1, -2, -100, #s, #s + 1, #s + 2, 3, 1.5, '2', math.mininteger})\n"
    "end\n"
    "local repl_strings = {'-', '%0', '%1', '%2', '%%', '%', '%x', 'z', '%9', '<%1>', '%0%0', ''}\n"
    "local function gen_repl_string()\n"
    "  local t = {}\n"
    "  for i = 1, R(0, 3) do t[i] = pick(repl_strings) end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local repl_functions = {\n"
    "  function(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end\n"
    "                return table.concat(t, '|') end,\n"
    "  function() return nil end,\n"
    "  function() return false end,\n"
    "  function(a) return a end,\n"
    "  function() return {} end,\n"
    "  function(a) return type(a) == 'string' and #a or 0.5 end,\n"
    "}\n"
    "local repl_table = {a = 'A', b = false, [''] = 'E', x = 1, [1] = 'one', [2] = true, ['ab'] = 'AB',\n"
    "                    c = {}}\n"
    "local function gen_repl()\n"
    "  local r = R(10)\n"
    "  if r <= 5 then return gen_repl_string() end\n"
    "  if r <= 7 then return pick(repl_functions) end\n"
    "  if r <= 8 then return repl_table end\n"
    "  return pick({7, 2.5, true, nil})\n"
    "end\n"
    "local function gen_max()\n"
    "  return pick({nil, nil, nil, 0, 1, 2, -1, 1.5, '2', 'x'})\n"
    "end\n"
    "\n"
    "-- ---- running one case with one set of functions ---------------------------\n"
    "local function gmatch_all(f, s, p, init)\n"
    "  local it = f(s, p, init)\n"
    "  local out = {}\n"
    "  for _ = 1, 40 do\n"
    "    local r = table.pack(it())\n"
    "    out[#out + 1] = ser_pack(r, 1)\n"
    "    if r.n == 0 or r[1] == nil then break end\n"
    "  end\n"
    "  return table.concat(out, '; ')\n"
    "end\n"
    "-- The set goes into the string table for the call, so that an argument\n"
    "-- error names the function the same way ('string.find') for both.\n"
    "local names = {'find', 'match', 'gmatch', 'gsub'}\n"
    "local function use(set)\n"
    "  for _, k in ipairs(names) do string[k] = set[k] end\n"
    "end\n"
    "local function call(set, op, s, p, a, b, nargs)\n"
    "  local f = set[op]\n"
    "  local r\n"
    "  use(set)\n"
    "  if op == 'gmatch' then\n"
    "    r = table.pack(pcall(gmatch_all, f, s, p, a))\n"
    "  elseif nargs == 2 then\n"
    "    r = table.pack(pcall(f, s, p))\n"
    "  elseif nargs == 3 then\n"
    "    r = table.pack(pcall(f, s, p, a))\n"
    "  else\n"
    "    r = table.pack(pcall(f, s, p, a, b))\n"
    "  end\n"
    "  use(OURS)\n"
    "  set_budget(1 << 40)     -- the harness's own string calls\n"
    "  return r[1], ser_pack(r, 1)\n"
    "end\n"
    "\n"
    "local stats\n"
    "local function describe(op, s, p, a, b)\n"
    "  local d = {op, ser(s), ser(p)}\n"
    "  d[#d + 1] = type(a) == 'function' and 'function' or type(a) == 'table' and 'table' or ser(a)\n"
    "  d[#d + 1] = ser(b)\n"
    "  return table.concat(d, ', ')\n"
    "end\n"
    "local function compare(op, s, p, a, b, nargs)\n"
    "  stats.cases = stats.cases + 1\n"
    "  set_budget(OUR_BUDGET)\n"
    "  local ok2, ours = call(OURS, op, s, p, a, b, nargs)\n"
    "  if not ok2 and ours:find(budget_error, 1, true) then\n"
    "    stats.budget = stats.budget + 1      -- heavy for ours: could be for stock too\n"
    "    return\n"
    "  end\n"
    "  set_budget(OUR_BUDGET)\n"
    "  local ok1, stock = call(STOCK, op, s, p, a, b, nargs)\n"
    "  if not ok1 then stats.errors = stats.errors + 1\n"
    "  elseif not stock:find('nil', 1, true) then stats.found = stats.found + 1 end\n"
    "  if stock ~= ours then\n"
    "    stats.failed = stats.failed + 1\n"
    "    if stats.failed <= 12 then\n"
    "      print(string.format('DIFF %s\\n  stock: %s\\n  ours:  %s', describe(op, s, p, a, b), stock, ours))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "\n"
    "function run_corpus(seed, n)\n"
    "  stats = {cases = 0, errors = 0, found = 0, budget = 0, failed = 0}\n"
    "  math.randomseed(seed)\n"
    "  for _ = 1, n do\n"
    "    local p = gen_pattern()\n"
    "    local s = gen_subject(p)\n"
    "    local op = pick({'find', 'find', 'match', 'match', 'gmatch', 'gsub', 'gsub'})\n"
    "    if op == 'find' then\n"
    "      local plain = pick({nil, nil, nil, true, false})\n"
    "      compare(op, s, p, gen_init(s), plain, plain == nil and R(2, 3) or 4)\n"
    "    elseif op == 'match' or op == 'gmatch' then\n"
    "      compare(op, s, p, gen_init(s), nil, R(2, 3))\n"
    "    else\n"
    "      local max = gen_max()\n"
    "      compare(op, s, p, gen_repl(), max, max == nil and 3 or 4)\n"
    "    end\n"
    "  end\n"
    "  return stats\n"
    "end\n"
    "\n"
    "-- ---- every escape and range over every byte --------------------------------\n"
    "function run_classes()\n"
    "  local bytes = {}\n"
    "  for b = 0, 255 do bytes[#bytes + 1] = string.char(b) end\n"
    "  local all = table.concat(bytes)\n"
    "  local n, failed = 0, 0\n"
    "  for c = 0, 255 do\n"
    "    local e = '%' .. string.char(c)\n"
    "    for _, p in ipairs({e, '[' .. e .. ']', '[^' .. e .. ']', e .. '+', '[' .. string.char(c) .. '-~]',\n"
    "                        '[!-' .. string.char(c) .. ']', '%f[' .. e .. ']'}) do\n"
    "      n = n + 1\n"
    "      set_budget(100000000)\n"
    "      local _, a = call(STOCK, 'gsub', all, p, '#', nil, 3)\n"
    "      set_budget(100000000)\n"
    "      local _, b = call(OURS, 'gsub', all, p, '#', nil, 3)\n"
    "      if a ~= b then\n"
    "        failed = failed + 1\n"
    "        if failed <= 5 then print(string.format('CLASS %q\\n  stock: %s\\n  ours:  %s', p, a, b)) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return n, failed\n"
    "end\n"
    "\n"
    "-- ---- the depth limit: the same \"pattern too complex\" boundary as stock ----\n"
    "local depth_probes = {\n"
    "  function(n) return ('xa'):rep(n), ('x*a'):rep(n) end,\n"
    "  function(n) return ('a'):rep(n), ('x*a'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('x*xa'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('x-a'):rep(n) end,\n"
    "  function(n) return ('a'):rep(n), ('x-a'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('x-xa'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('x?a'):rep(n) end,\n"
    "  function(n) return ('a'):rep(n), ('x?a'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('x?xa'):rep(n) end,\n"
    "  function(n) return ('xxa'):rep(n), ('x+xa'):rep(n) end,\n"
    "  function(n) return ('xa'):rep(n), ('[x]+%f[a]a'):rep(n) end,\n"
    "  function(n) return ('x'):rep(n + 1), '(x)' .. ('x?'):rep(n) end,\n"
    "  function(n) return ('x'):rep(n), '()' .. ('x?'):rep(n) .. '$' end,\n"
    "  function(n) return ('x'):rep(n), ('x?'):rep(n) .. '(x?)' end,\n"
    "  function(n) return ('x'):rep(n + 1), '(x)' .. ('x?'):rep(n - 1) .. '%1' end,\n"
    "  function(n) return ('(x)'):rep(n), ('%b()?'):rep(n) end,\n"
    "  function(n) return ('x'):rep(n), ('(x?)'):rep(math.min(n, 40)) end,\n"
    "  function(n) return ('x'):rep(n), ('x?'):rep(n) .. '[' end,\n"
    "  function(n) return ('x'):rep(n), ('x?'):rep(n) .. '%' end,\n"
    "}\n"
    "local function deepest_ok(set, mk)\n"
    "  for n = 1, 240 do\n"
    "    local s, p = mk(n)\n"
    "    set_budget(100000000)\n"
    "    local ok, e = pcall(set.match, s, p)\n"
    "    if not ok then return (n - 1) .. ' ' .. e end\n"
    "  end\n"
    "  return 'no error up to 240'\n"
    "end\n"
    "function run_depth()\n"
    "  local failed = 0\n"
    "  for i, mk in ipairs(depth_probes) do\n"
    "    local a, b = deepest_ok(STOCK, mk), deepest_ok(OURS, mk)\n"
    "    if a ~= b then\n"
    "      failed = failed + 1\n"
    "      print(string.format('DEPTH probe %d: stock %s, ours %s', i, a, b))\n"
    "    end\n"
    "  end\n"
    "  return #depth_probes, failed\n"
    "end\n"
    "\n"
    "-- ---- speed on common patterns (printed, not asserted) ----------------------\n"
    "local text = ('GET /api/v1/items?id=42&name=widget HTTP/1.1 '):rep(20)\n"
    "local csv = ('alpha,beta,gamma,delta,'):rep(10)\n"
    "local benches = {\n"
    "  {'find capture', function(f) return f.find('key=value; other=thing', '(%w+)=(%w+)') end},\n"
    "  {'match anchored', function(f) return f.match('2024-01-15T10:20:30Z', '^(%d+)-(%d+)-(%d+)T') end},\n"
    "  {'match trim', function(f) return f.match('   trim me please   ', '^%s*(.-)%s*$') end},\n"
    "  {'find plain', function(f) return f.find(text, 'HTTP/1.0', 1, true) end},\n"
    "  {'find literal', function(f) return f.find(text, 'name=(%a+) HTTP/1%.0') end},\n"
    "  {'gsub spaces', function(f) return f.gsub(text, '%s+', ' ') end},\n"
    "  {'gsub table', function(f) return f.gsub('$a and $b or $c', '%$(%w+)', {a = 1, b = 2}) end},\n"
    "  {'gmatch csv', function(f) local n = 0 for w in f.gmatch(csv, '([^,]+)') do n = n + 1 end return n end},\n"
    "  {'match class', function(f) return f.match('user-name_42@example', '^[%w_%-]+@') end},\n"
    "}\n"
    "function run_bench(iterations)\n"
    "  local total_stock, total_ours = 0, 0\n"
    "  for _, b in ipairs(benches) do\n"
    "    local t = {}\n"
    "    for k, set in ipairs({STOCK, OURS}) do\n"
    "      set_budget(math.maxinteger)\n"
    "      local t0 = os.clock()\n"
    "      for _ = 1, iterations do b[2](set) end\n"
    "      t[k] = os.clock() - t0\n"
    "    end\n"
    "    total_stock, total_ours = total_stock + t[1], total_ours + t[2]\n"
    "    print(string.format('  %-15s stock %7.1f ns  ours %7.1f ns  ours/stock %.2f', b[1],\n"
    "                        t[1] / iterations * 1e9, t[2] / iterations * 1e9, t[2] / t[1]))\n"
    "  end\n"
    "  print(string.format('  %-15s ours/stock %.2f', 'all', total_ours / total_stock))\n"
    "end\n";

static long env_long(const char *name, long fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : fallback;
}

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "string");
    lua_newtable(L);
    const char *names[] = {"find", "match", "gmatch", "gsub"};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -2, names[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_setglobal(L, "STOCK");
    lua_pop(L, 1);
    pattern_match_open(L, &steps_left);
    lua_getglobal(L, "string");
    lua_newtable(L);
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -2, names[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_setglobal(L, "OURS");
    lua_pop(L, 1);
    lua_pushcfunction(L, set_budget);
    lua_setglobal(L, "set_budget");
    lua_pushstring(L, PATTERN_MATCH_BUDGET_ERROR);
    lua_setglobal(L, "BUDGET_ERROR");
    lua_pushinteger(L, CASE_BUDGET);
    lua_setglobal(L, "OUR_BUDGET");
    if (luaL_loadbuffer(L, harness, strlen(harness), "=diff") != LUA_OK ||
        lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "harness: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    return L;
}

static long stat_field(lua_State *L, const char *name)
{
    lua_getfield(L, -1, name);
    long v = (long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static void corpus(lua_State *L, long seed, long cases)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    lua_getglobal(L, "run_corpus");
    lua_pushinteger(L, seed);
    lua_pushinteger(L, cases);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        check_failed++;
        fprintf(stderr, "corpus (seed %ld): %s\n", seed, lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long n = stat_field(L, "cases"), failed = stat_field(L, "failed");
    long errors = stat_field(L, "errors"), found = stat_field(L, "found");
    long budget = stat_field(L, "budget");
    lua_pop(L, 1);
    printf("seed %ld: %ld cases, %ld differ; stock raised %ld errors, found %ld matches; "
           "%ld skipped (over our budget); %.2f s\n", seed, n, failed, errors, found, budget,
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    CHECK(n == cases);
    CHECK_EQ_INT(failed, 0);
    /* the generator must keep producing both kinds of case, and rarely
     * cases too heavy to compare */
    CHECK(errors > n / 20);
    CHECK(found > n / 5);
    CHECK(budget < n / 100);
}

static void classes(lua_State *L)
{
    lua_getglobal(L, "run_classes");
    if (lua_pcall(L, 0, 2, 0) != LUA_OK) {
        check_failed++;
        fprintf(stderr, "classes: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    printf("escapes, sets and ranges over all 256 bytes: %ld patterns, %ld differ\n",
           (long)lua_tointeger(L, -2), (long)lua_tointeger(L, -1));
    CHECK_EQ_INT(lua_tointeger(L, -1), 0);
    lua_pop(L, 2);
}

static void depth(lua_State *L)
{
    lua_getglobal(L, "run_depth");
    if (lua_pcall(L, 0, 2, 0) != LUA_OK) {
        check_failed++;
        fprintf(stderr, "depth: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    printf("depth limit: %ld probes, %ld differ\n", (long)lua_tointeger(L, -2),
           (long)lua_tointeger(L, -1));
    CHECK_EQ_INT(lua_tointeger(L, -1), 0);
    lua_pop(L, 2);
}

static void bench(lua_State *L, long iterations)
{
    if (iterations <= 0)
        return;
    printf("speed, %ld calls each (not asserted):\n", iterations);
    lua_getglobal(L, "run_bench");
    lua_pushinteger(L, iterations);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        check_failed++;
        fprintf(stderr, "bench: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

int main(void)
{
    lua_State *L = new_state();
    long cases = env_long("PATTERNS_DIFF_CASES", DEFAULT_CASES);
    corpus(L, FIXED_SEED, cases);
    if (getenv("PATTERNS_DIFF_SEED"))
        corpus(L, env_long("PATTERNS_DIFF_SEED", 0), cases);
    classes(L);
    depth(L);
    bench(L, env_long("PATTERNS_BENCH_ITERATIONS", 3000));
    lua_close(L);
    return check_done("pattern_match_diff");
}
