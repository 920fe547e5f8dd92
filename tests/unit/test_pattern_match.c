/* pattern_match: the budgeted find/match/gmatch/gsub give stock Lua 5.4's
 * results and errors, and a pathological pattern runs out of budget fast.
 *
 * Each case is a Lua chunk run twice in the same state: once with the
 * stock functions put back into the string table, once with the budgeted
 * ones; the serialized results (or error messages) must be equal. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"
#include "pattern_match.h"

static long steps_left;

/* The harness: `use(set)` puts a set of functions into the string table,
 * `run(i, set)` runs case i with that set and returns its serialized
 * outcome. */
static const char *const harness =
    "local names = {'find', 'match', 'gmatch', 'gsub'}\n"
    "STOCK, BUDGETED = {}, {}\n"
    "for _, n in ipairs(names) do STOCK[n] = string[n] end\n"
    "function save_budgeted()\n"
    "  for _, n in ipairs(names) do BUDGETED[n] = string[n] end\n"
    "end\n"
    "function use(set)\n"
    "  for _, n in ipairs(names) do string[n] = set[n] end\n"
    "end\n"
    "local function ser(v, depth)\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return string.format('%q', v) end\n"
    "  if t == 'function' or t == 'userdata' or t == 'thread' then return t end\n"
    "  if t ~= 'table' then return t .. ':' .. tostring(v) end\n"
    "  if depth > 5 then return '{...}' end\n"
    "  local keys = {}\n"
    "  for k in pairs(v) do keys[#keys + 1] = k end\n"
    "  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)\n"
    "  local out = {}\n"
    "  for _, k in ipairs(keys) do\n"
    "    out[#out + 1] = '[' .. ser(k, depth + 1) .. ']=' .. ser(v[k], depth + 1)\n"
    "  end\n"
    "  return '{' .. table.concat(out, ',') .. '}'\n"
    "end\n"
    "function compile(src)\n"
    "  return load(src, '=case', 't')\n"
    "end\n"
    "function run(chunk, set)\n"
    "  use(set)\n"
    "  local r = table.pack(pcall(chunk))\n"
    "  use(BUDGETED)\n"
    "  local out = {'n=' .. r.n}\n"
    "  for i = 1, r.n do out[#out + 1] = ser(r[i], 0) end\n"
    "  return table.concat(out, ' ')\n"
    "end\n";

/* Lua chunks; each returns whatever it wants compared. */
static const char *const cases[] = {
    /* find: plain, init, anchors, specials */
    "return string.find('hello world', 'o w')",
    "return string.find('hello world', 'o', 5)",
    "return string.find('hello world', 'o', 6)",
    "return string.find('hello world', 'l', -3)",
    "return string.find('hello world', 'l', -100)",
    "return string.find('hello world', 'h', 0)",
    "return string.find('hello', '', 6)",
    "return string.find('hello', '', 7)",
    "return string.find('hello', '', 100)",
    "return string.find('', '')",
    "return string.find('', 'a')",
    "return string.find('a.b', '.', 1, true)",
    "return string.find('a.b', '.', 2, true)",
    "return string.find('a.b', '%.', 1)",
    "return string.find('a+b', '+', 1, true)",
    "return string.find('a(b', '(', 1, true)",
    "return string.find('abc', 'b', 1, false)",
    "return string.find('abc', 'b', nil, true)",
    "return string.find('abc', '[b', 1, true)",
    "return string.find('aaa', 'aaaa', 1, true)",
    "return string.find('a\\0b\\0c', '\\0c')",
    "return string.find('a\\0b\\0c', 'b\\0', 1, true)",
    "return string.find('a\\0b\\0c', '%z')",
    "return string.find('a\\0b\\0c', '[\\0]c')",
    "return string.find('a\\0b', 'a.b')",
    "return string.find('hello', '^h')",
    "return string.find('hello', '^e')",
    "return string.find('hello', '^e', 2)",
    "return string.find('hello', 'o$')",
    "return string.find('hello', 'l$')",
    "return string.find('he$llo', 'e$l')",
    "return string.find('a^b', 'a^b')",
    "return string.find('hello', '^hello$')",
    "return string.find('', '^$')",
    "return string.find(12345, 34)",
    "return string.find(1.5, '%.')",
    "return ('hello'):find('l+')",
    "local s = 'key=value'; return s:find('(%w+)=(%w+)')",
    /* match: captures, position captures, classes */
    "return string.match('key = value', '(%w+)%s*=%s*(%w+)')",
    "return string.match('hello', '()ll()')",
    "return string.match('hello', '(h)(e)(l)(l)(o)')",
    "return string.match('hello', 'l+')",
    "return string.match('hello', 'x')",
    "return string.match('hello', '(l)(x?)')",
    "return string.match('  trim me  ', '^%s*(.-)%s*$')",
    "return string.match('2024-01-15', '(%d+)-(%d+)-(%d+)')",
    "return string.match('abc', '()', 4)",
    "return string.match('abc', '()', 5)",
    "return string.match('abc', '.', -1)",
    "return string.match('THE (quick) fox', '%((%a+)%)')",
    "return string.match('f(a(b)c)d', '%b()')",
    "return string.match('f(a(b)c', '%b()')",
    "return string.match('[[x]]', '%b[]')",
    "return string.match('xyx', '%bxy')",
    "return string.match('THE quick', '%f[%a]%a+', 4)",
    "return string.match('hello world', '%f[%w]%w+$')",
    "return string.match('THE (quick) fox', '%f[%l]%a+')",
    "return string.match('abc', '%f[%z]')",
    "return string.match('abc', '()%f[%z]')",
    "return string.match('x', '%f[^\\0]x')",
    "return string.match('abab', '(ab)%1')",
    "return string.match('abcabc', '((a)(b)c)%1')",
    "return string.match('hello \"quoted\" text', '([\"\\'])(.-)%1')",
    "return string.match('aaa', 'a-b')",
    "return string.match('aaab', 'a-b')",
    "return string.match('aaab', 'a*')",
    "return string.match('aaab', 'a+')",
    "return string.match('b', 'a?b')",
    "return string.match('ab', 'a?b')",
    "return string.match('ac', 'ab?c')",
    "return string.match('x = 1', '^(%a+)%s*=%s*(%d+)$')",
    "local t = {} for _, c in ipairs({'a','c','d','g','l','p','s','u','w','x','A','C','D','G','L','P','S','U','W','X'}) do\n"
    "  local s = ''\n"
    "  for b = 0, 255 do if string.char(b):match('%' .. c) then s = s .. string.char(b) end end\n"
    "  t[c] = s\n"
    "end return t",
    "return string.match('a-b]c', '[%]%-]+')",
    "return string.match('a]b', '[]]')",
    "return string.match('a]b', '[^]]+')",
    "return string.match('a-z', '[a-]+')",
    "return string.match('a-z', '[-a]+')",
    "return string.match('m', '[a-z]'), string.match('M', '[a-z]'), string.match('5', '[%d]')",
    "return string.match('hello', '[^%s]+')",
    "return string.match('x^y', '[%^]')",
    "return string.match('x^y', '[x^]+')",
    "return string.match('\\200\\255', '[\\128-\\255]+')",
    "return string.match('%', '%%')",
    "return string.match('a.b', '%.')",
    "return string.match('one two  three', '(%S+)%s+(%S+)%s+(%S+)')",
    "return string.match(string.rep('a', 32), string.rep('(a)', 32))",
    /* gmatch */
    "local t = {} for w in string.gmatch('one two three', '%a+') do t[#t+1] = w end return t",
    "local t = {} for k, v in string.gmatch('a=1, b=2, c=3', '(%w+)=(%w+)') do t[k] = v end return t",
    "local t = {} for p in string.gmatch('abc', '()') do t[#t+1] = p end return t",
    "local t = {} for w in string.gmatch('abc', '') do t[#t+1] = w end return t",
    "local t = {} for w in string.gmatch('abc', 'x*') do t[#t+1] = w end return t",
    "local t = {} for w in string.gmatch('hello world from lua', '%a+', 7) do t[#t+1] = w end return t",
    "local t = {} for w in string.gmatch('hello', '.', -2) do t[#t+1] = w end return t",
    "local t = {} for w in string.gmatch('hello', '.', 100) do t[#t+1] = w end return t",
    "local t = {} for w in string.gmatch('^a^b', '^.') do t[#t+1] = w end return t",
    "local t = {} for a, b in string.gmatch('k1=v1;k2=v2', '(%w+)=()') do t[#t+1] = a .. '@' .. b end return t",
    "local t = {} for w in ('a,b,,c'):gmatch('([^,]*)') do t[#t+1] = w end return t",
    "local it = string.gmatch('a b', '%a') return it(), it(), it(), it()",
    /* gsub: string, table, function replacements, max n */
    "return string.gsub('hello world', 'o', '0')",
    "return string.gsub('hello world', 'o', '0', 1)",
    "return string.gsub('hello world', 'o', '0', 0)",
    "return string.gsub('hello world', 'o', '0', -1)",
    "return string.gsub('hello world', 'o', '0', 2.0)",
    "return string.gsub('hello world', '(o)', '[%1]')",
    "return string.gsub('hello world', 'o', '[%0]')",
    "return string.gsub('hello world', 'l+', '<%0>')",
    "return string.gsub('hello', '', '-')",
    "return string.gsub('hello', 'x*', '-')",
    "return string.gsub('abc', '%w', '%0%0')",
    "return string.gsub('abc', '%w', '%%')",
    "return string.gsub('hello world', '(%w+) (%w+)', '%2 %1')",
    "return string.gsub('hello', '()l', '%1')",
    "return string.gsub('abc', 'b', 5)",
    "return string.gsub('abc', 'b', 2.5)",
    "return string.gsub('hello world', '^h', 'H')",
    "return string.gsub('hello hello', '^hello', 'bye')",
    "return string.gsub('hello', '^', '>')",
    "return string.gsub('hello', '$', '<')",
    "return string.gsub('$x$', '%$', 'S')",
    "return string.gsub('$name is $age', '%$(%w+)', {name = 'Ann', age = 7})",
    "return string.gsub('$name is $unknown', '%$(%w+)', {name = 'Ann'})",
    "return string.gsub('$a $b', '%$(%w+)', {a = false, b = 'B'})",
    "return string.gsub('abc', '%w', {a = 1, b = 2.5})",
    "return string.gsub('abc', '()', {[1] = 'one', [3] = 'three'})",
    "return string.gsub('hello world', '%w+', string.upper)",
    "return string.gsub('hello world', '%w+', function(w) return nil end)",
    "return string.gsub('hello world', '%w+', function(w) return false end)",
    "return string.gsub('hello world', '%w+', function(w) return #w end)",
    "return string.gsub('a=1, b=2', '(%w+)=(%w+)', function(k, v) return v .. '=' .. k end)",
    "return string.gsub('abc', '()(.)', function(p, c) return c .. p end)",
    "local n = 0 local s = string.gsub('aaaa', 'a', function() n = n + 1 return 'b' end, 3) return s, n",
    "return string.gsub('one two', '(%w+)', '<%1>', 1)",
    "return string.gsub('', '', 'x')",
    "return string.gsub('abc', '.-', '|')",
    "return string.gsub('a\\0b', '%z', 'Z')",
    "return string.gsub(123, 2, 9)",
    "local s = 'hello' return ('x' .. s):gsub('l', 'L')",
    "local s = 'unchanged' local r = string.gsub(s, 'z', 'y') return r == s, r",
    /* errors: malformed patterns, bad arguments, bad replacements */
    "return string.find('a', '%')",
    "return string.find('a', 'a%')",
    "return string.find('a', '[a')",
    "return string.find('a', '[a%')",
    "return string.find('a', '[]')",
    "return string.find('a', '[^')",
    "return string.find('a', '%b')",
    "return string.find('a', '%ba')",
    "return string.find('a', '%f')",
    "return string.find('a', '%fa')",
    "return string.find('a', '%f[a')",
    "return string.find('a', '(')",
    "return string.match('a', 'a)')",
    "return string.match('a', ')')",
    "return string.find('a', '%1')",
    "return string.find('aa', '(a)%2')",
    "return string.find('aa', '(a%1)')",
    "return string.match('a', '(a')",
    "return string.match(string.rep('a', 33), string.rep('(a)', 33))",
    "return string.match(string.rep('a', 300), string.rep('a?', 300))",
    "return string.find()",
    "return string.find('a')",
    "return string.find({}, 'a')",
    "return string.find('a', 'a', 'x')",
    "return string.find('a', 'a', 1.5)",
    "return ('a'):find({})",
    "return string.match('a', '%')",
    "return string.gmatch('a')",
    "return string.gmatch('a', '%')()",
    "return string.gmatch('a', '(')()",
    "return string.gsub('a', '%', 'x')",
    "return string.gsub('a', 'a')",
    "return string.gsub('a', 'a', true)",
    "return string.gsub('a', 'a', 'x', 'y')",
    "return string.gsub('a', 'a', '%2')",
    "return string.gsub('a', '(a)', '%2')",
    "return string.gsub('a', 'a', '%x')",
    "return string.gsub('a', 'a', '%')",
    "return string.gsub('a', 'a', function() return {} end)",
    "return string.gsub('a', 'a', {a = {}})",
    "return string.gsub('a', 'a', function() error('boom') end)",
    "return string.gsub('a', '(a', 'x')",
    "return string.gsub('abc', '%w', '%1')",
    "return string.gsub('abc', '()', '%1')",
};

/* luaL_error prefixes "chunk:line:" of the Lua caller, if any. */
static int is_budget_error(const char *msg)
{
    size_t n = strlen(msg), k = strlen(PATTERN_MATCH_BUDGET_ERROR);
    return n >= k && strcmp(msg + n - k, PATTERN_MATCH_BUDGET_ERROR) == 0;
}

/* CPU time of this process: the bounds below are on the matcher's work,
 * which a loaded machine's other processes do not stretch. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static lua_State *new_state(long *budget)
{
    lua_State *L = luaL_newstate();
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    lua_settop(L, 0);
    if (luaL_dostring(L, harness) != LUA_OK) {
        fprintf(stderr, "harness: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    pattern_match_open(L, budget);
    lua_getglobal(L, "save_budgeted");
    lua_call(L, 0, 0);
    return L;
}

/* Runs the chunk at `index` with one set of functions; returns a copy of
 * its serialized outcome. */
static char *run_with(lua_State *L, int index, const char *set)
{
    lua_getglobal(L, "run");
    lua_pushvalue(L, index);
    lua_getglobal(L, set);
    lua_call(L, 2, 1);
    char *out = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

static void same_results_as_stock(void)
{
    lua_State *L = new_state(&steps_left);
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        lua_getglobal(L, "compile");
        lua_pushstring(L, cases[i]);
        lua_call(L, 1, 2);
        if (lua_isnil(L, -2)) {
            check_failed++;
            fprintf(stderr, "case %zu does not compile: %s\n", i, lua_tostring(L, -1));
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        steps_left = 100000000;
        char *stock = run_with(L, lua_gettop(L), "STOCK");
        char *ours = run_with(L, lua_gettop(L), "BUDGETED");
        if (strcmp(stock, ours) == 0) {
            check_passed++;
        } else {
            check_failed++;
            fprintf(stderr, "case %zu differs: %s\n  stock:    %s\n  budgeted: %s\n",
                    i, cases[i], stock, ours);
        }
        free(stock);
        free(ours);
        lua_pop(L, 1);
    }
    lua_close(L);
}

/* The budgeted functions are the ones reached by string.x, by methods on
 * strings and through package.loaded, and they draw on the counter. */
static void installed_everywhere_and_counting(void)
{
    lua_State *L = new_state(&steps_left);
    steps_left = 1000;
    CHECK(luaL_dostring(L, "return ('hello'):find('l+')") == LUA_OK);
    CHECK(steps_left < 1000);
    CHECK_EQ_INT(lua_tointeger(L, -2), 3);
    CHECK_EQ_INT(lua_tointeger(L, -1), 4);
    lua_settop(L, 0);

    CHECK(luaL_dostring(L, "return string.find == BUDGETED.find and string.find ~= STOCK.find"
                           " and ('').gsub == BUDGETED.gsub") == LUA_OK);
    CHECK(lua_toboolean(L, -1));
    lua_settop(L, 0);

    long before = steps_left = 1000000;
    CHECK(luaL_dostring(L, "return string.gsub(string.rep('ab', 100), 'b', 'c')") == LUA_OK);
    CHECK(steps_left < before);
    CHECK(steps_left > before - 10000);     /* a linear pattern costs little */
    lua_settop(L, 0);

    /* A budget that is already spent fails the next match at once... */
    steps_left = 0;
    CHECK(luaL_dostring(L, "return string.match('abc', 'b')") != LUA_OK);
    CHECK(is_budget_error(lua_tostring(L, -1)));
    CHECK(steps_left < 0);
    lua_settop(L, 0);

    /* ...and gmatch's iterator draws on the same counter. */
    steps_left = 1000000;
    CHECK(luaL_dostring(L, "IT = string.gmatch('a b c', '%a')") == LUA_OK);
    steps_left = 0;
    CHECK(luaL_dostring(L, "return IT()") != LUA_OK);
    CHECK(is_budget_error(lua_tostring(L, -1)));
    lua_settop(L, 0);
    steps_left = 1000000;
    CHECK(luaL_dostring(L, "return IT()") == LUA_OK);   /* usable again */
    CHECK(lua_isstring(L, -1));
    lua_settop(L, 0);
    lua_close(L);

    /* No budget at all. */
    L = new_state(NULL);
    CHECK(luaL_dostring(L, "return (string.gsub(string.rep('x', 1000), 'x', 'y'))") == LUA_OK);
    CHECK(lua_rawlen(L, -1) == 1000);
    lua_close(L);
}

/* Each pathological call must fail with the budget error well before a
 * second is up (stock Lua takes minutes or more on all of them). */
static void pathological_patterns_run_out(void)
{
    static const char *const bad[] = {
        "return string.rep('a', 3000):find('.-.-.-.-b')",
        "return ('a'):rep(3000):match('(.*)(.*)(.*)(.*)b')",
        "return string.gsub(string.rep('a', 3000), '.-.-.-.-b', 'x')",
        "for w in string.gmatch(string.rep('a', 3000), '.-.-.-.-b') do end",
        "return string.rep('a', 3000):find('a*a*a*a*a*b')",
        /* quadratic in %b, in a back reference, in a long literal and in a
         * repeated set */
        "return string.find(string.rep('(', 100000), '%b()')",
        "return string.find(string.rep('a', 200000), '(.*)%1b')",
        "return string.match(string.rep('a', 1000000), string.rep('a', 100000) .. 'b')",
        "return string.find(string.rep('b', 100000), '[' .. string.rep('a', 100000) .. 'b]*c')",
        /* linear in one call, but each call scans or compiles 10^5-10^6
         * bytes: the share per 32 bytes adds up over the calls */
        "local h, n = string.rep('a', 1000000), string.rep('a', 1000) .. 'b'\n"
        "for i = 1, 1e9 do h:find(n, 1, true) end",
        "local p = '[' .. string.rep('a', 100000) .. ']'\n"
        "for i = 1, 1e9 do string.find('b', p) end",
        "local h = string.rep('a', 1000000)\n"
        "for i = 1, 1e9 do h:gsub('b', 'c') end",
    };
    lua_State *L = new_state(&steps_left);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        steps_left = 1000000;
        double t0 = now();
        int rc = luaL_dostring(L, bad[i]);
        double took = now() - t0;
        const char *msg = rc != LUA_OK ? lua_tostring(L, -1) : "(no error)";
        if (rc == LUA_OK || !is_budget_error(msg) || took >= 0.5) {
            check_failed++;
            fprintf(stderr, "pathological %zu: rc %d, %s, %.3f s: %s\n", i, rc, msg, took, bad[i]);
        } else {
            check_passed++;
        }
        CHECK(steps_left < 0);
        lua_settop(L, 0);
    }

    /* Called straight from pcall (a C function), the message has no
     * position prefix; and the state is still usable afterwards. */
    steps_left = 1000000;
    CHECK(luaL_dostring(L, "return pcall(string.find, string.rep('a', 3000), '.-.-.-.-b')") == LUA_OK);
    CHECK(!lua_toboolean(L, -2));
    CHECK(strcmp(lua_tostring(L, -1), PATTERN_MATCH_BUDGET_ERROR) == 0);
    lua_settop(L, 0);
    steps_left = 1000000;
    CHECK(luaL_dostring(L, "return string.find(string.rep('a', 3000) .. 'b', '.-.-.-.-b')") == LUA_OK);
    CHECK_EQ_INT(lua_tointeger(L, -1), 3001);
    lua_settop(L, 0);

    /* What used to be quadratic in one call is linear now (the plain find
     * is memmem, a bracket class is compiled once into a bitmap): done in
     * well under the budget, and still charged for. */
    static const char *const linear[] = {
        "return string.find(string.rep('a', 1000000), string.rep('a', 100000) .. 'b', 1, true)",
        "return string.find(string.rep('b', 10000), '[' .. string.rep('a', 100000) .. ']')",
    };
    for (size_t i = 0; i < sizeof linear / sizeof linear[0]; i++) {
        steps_left = 1000000;
        double t0 = now();
        int rc = luaL_dostring(L, linear[i]);
        double took = now() - t0;
        CHECK(rc == LUA_OK && lua_isnil(L, -1));
        CHECK(took < 0.5);
        CHECK(steps_left < 1000000 - 3000);     /* about one step per 32 bytes */
        lua_settop(L, 0);
    }
    lua_close(L);
}

int main(void)
{
    same_results_as_stock();
    installed_everywhere_and_counting();
    pathological_patterns_run_out();
    return check_done("pattern_match");
}
