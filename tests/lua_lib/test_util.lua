-- smartshop.util: the helpers the rules share (option checks, name
-- patterns, FNV-1a, payload keys, bounded maps), each on its own.
local test, eq, ok, raises = T.test, T.eq, T.ok, T.raises

local function util() return T.sandbox().require "smartshop.util" end

test("options: a table, known options, declared types, the caller's line", function()
  local u = util()
  local spec = { rate = "number", burst = "integer?", name = "string?" }
  eq(u.options("m", { rate = 2.5, burst = 3 }, spec).rate, 2.5)
  u.options("m", { rate = 1, burst = 3.0 }, spec)      -- 3.0 is whole: an integer
  raises(function() u.options("m", "x", spec) end, "m: options must be a table, got string")
  raises(function() u.options("m", { rate = 1, brust = 2 }, spec) end, "m: unknown option 'brust'")
  raises(function() u.options("m", {}, spec) end, "m: option 'rate' is required (number)")
  raises(function() u.options("m", { rate = "1" }, spec) end, "m: option 'rate' must be a number, got string")
  raises(function() u.options("m", { rate = 1, burst = 2.5 }, spec) end,
         "m: option 'burst' must be an integer, got number")
  -- level 3: the error names the line that called the rule's constructor
  local function new(opts) u.options("smartshop.rules.x", opts, spec) return opts end
  local function policy_line() local r = new { rate = "fast" } return r end
  local err = raises(policy_line, "option 'rate' must be a number")
  ok(err:find("test_util.lua:%d+:"), "points at a line of the caller: " .. err)
end)

test("names and lookup: exact, then '*', then prefixes in order", function()
  local u = util()
  local m = u.names("m", "src", { "a", "tools-*", ["b"] = "reason b", ["tool*"] = "second" }, true)
  eq(u.lookup(m, "a"), true)
  eq(u.lookup(m, "b"), "reason b")
  eq(u.lookup(m, "tools-7"), true)
  eq(u.lookup(m, "toolbox"), "second")
  eq(u.lookup(m, "c"), nil)
  eq(u.lookup(m, nil), nil)
  eq(m.patterns, true)
  eq(m.empty, false)
  local exact = u.names("m", "dst", { "x" }, "default reason")
  eq(exact.patterns, false, "exact names only")
  eq(u.lookup(exact, "x"), "default reason", "array entries take the default")
  local any = u.names("m", "dst", { x = "exact", ["*"] = "any" })
  eq(u.lookup(any, "x"), "exact", "an exact name before '*'")
  eq(u.lookup(any, "y"), "any")
  eq(u.names("m", "dst", {}).empty, true)
  raises(function() u.names("m", "src", "a") end, "m: option 'src' must be a list of names, got string")
  raises(function() u.names("m", "src", { "a*b" }, true) end, "'a*b': '*' may only end a name")
  raises(function() u.names("m", "src", { "" }, true) end, "a name must be a non-empty string")
  raises(function() u.names("m", "src", { a = 3 }) end, "the value for 'a' must be a string or true")
end)

test("set: an array of strings, limited to the allowed values", function()
  local u = util()
  eq(u.set("m", "types", { "request", "event" }), { request = true, event = true })
  raises(function() u.set("m", "types", { "request", "reply" }, { request = true }) end,
         "m: option 'types': unexpected value reply")
  raises(function() u.set("m", "types", "request") end, "m: option 'types' must be a list, got string")
end)

test("fnv1a: the published 32-bit vectors, and it continues", function()
  local u = util()
  eq(u.fnv1a(""), 0x811c9dc5)
  eq(u.fnv1a("a"), 0xe40c292c)
  eq(u.fnv1a("foobar"), 0xbf9cf968)
  eq(u.fnv1a("bar", u.fnv1a("foo")), u.fnv1a("foobar"), "fnv1a(b, fnv1a(a)) == fnv1a(a .. b)")
  for _, s in ipairs { "", "x", "cart-17\0inst-2", string.rep("\255", 100) } do
    local h = u.fnv1a(s)
    ok(math.type(h) == "integer" and h >= 0 and h <= 0xffffffff, "32 bits: " .. h)
  end
end)

test("key: a payload value as a key", function()
  local S = T.sandbox()
  local u = S.require "smartshop.util"
  eq(u.key("c-1"), "c-1")
  eq(u.key(3), "3")
  eq(u.key(3.0), "3", "JSON 3 decodes as 3.0: the same key as 3")
  eq(u.key(-0.0), "0")
  eq(u.key(2.5), "2.5")
  eq(u.key(true), "true")
  eq(u.key(nil), nil)
  eq(u.key(S.env.json.null), nil)
  eq(u.key({}), nil)
end)

test("bounded: at most max keys, the least recently used generation dropped", function()
  local u = util()
  local b = u.bounded(4)                 -- two generations of 2
  b:put("a", 1)
  b:put("b", 2)
  eq(b:count(), 2)
  b:put("c", 3)                          -- a, b become the old generation
  eq({ b:get("a"), b:get("b"), b:get("c") }, { 1, 2, 3 }, "found in either generation")
  ok(b:count() <= 4, "count " .. b:count())
  -- a key used between every new one stays; the others go, oldest first
  b = u.bounded(4)
  b:put("a", 1)
  for i = 1, 20 do
    b:put("k" .. i, i)
    eq(b:get("a"), 1, "a kept while in use (" .. i .. ")")
    ok(b:count() <= 4, "bounded: " .. b:count())
  end
  eq(b:get("k1"), nil, "an old key unused since is forgotten")
  b:put("a", 10)
  eq(b:get("a"), 10, "put replaces")
  local one = u.bounded(1)
  one:put("x", 1)
  one:put("y", 2)
  eq(one:get("y"), 2)
  ok(one:count() <= 2)
end)
