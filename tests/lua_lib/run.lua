-- tests/lua_lib/run.lua: the tests of the Lua library in lua/, run by the
-- stock interpreter (Debian's lua5.4) with lua-cjson as json:
--
--   lua5.4 tests/lua_lib/run.lua [NAME ...]     (NAME: test_NAME.lua; default all)
--
-- Each test runs the modules in a fresh sandbox(): a global table with only
-- what the broker's policy state offers (docs/policies.md), a `require`
-- that loads smartshop.* modules from lua/ as text into that table and
-- nothing else, now_ms() on a fake clock, log that records its lines. So a
-- module that reaches for io, load, debug or a C module fails here too.
-- Exit status 0 when all pass, 1 otherwise.

local script_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local ROOT = script_dir .. "/../.."
local LUA_DIR = ROOT .. "/lua"
local cjson = require "cjson"

local T = { ROOT = ROOT, LUA_DIR = LUA_DIR }

-- The sandbox ------------------------------------------------------------

local BASE = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal",
  "rawget", "rawlen", "rawset", "select", "setmetatable", "tonumber", "tostring", "type",
  "xpcall", "_VERSION",
}
T.SANDBOX_GLOBALS = {}
for _, k in ipairs(BASE) do T.SANDBOX_GLOBALS[k] = true end
for _, k in ipairs { "string", "table", "math", "utf8", "os", "json", "log", "print",
                     "warn", "now_ms", "_G", "require" } do
  T.SANDBOX_GLOBALS[k] = true
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- A fresh policy state. S.clock is the fake clock (ms); S.logs its log lines.
function T.sandbox()
  local S = { clock = 1000000, logs = {} }
  local env = {}
  for _, k in ipairs(BASE) do env[k] = _G[k] end
  env.setmetatable = function(t, m)
    if type(m) == "table" and rawget(m, "__gc") ~= nil then error("no __gc", 2) end
    return setmetatable(t, m)
  end
  env.string, env.table, env.math, env.utf8 = copy(string), copy(table), copy(math), copy(utf8)
  env.string.dump = nil
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
  env.json = { encode = cjson.encode, decode = cjson.decode, null = cjson.null }
  local function logger(level)
    return function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      S.logs[#S.logs + 1] = level .. " " .. table.concat(parts, " ")
    end
  end
  env.log = { debug = logger("DEBUG"), info = logger("INFO"), warn = logger("WARN"), error = logger("ERROR") }
  env.print, env.warn = env.log.info, env.log.warn
  env.now_ms = function() return S.clock end
  env._G = env
  local loaded = {}
  env.require = function(name)
    if type(name) ~= "string" or not name:match("^smartshop%.[%w_.]+$") or name:find("..", 1, true) then
      error("require: only smartshop.* modules, not " .. tostring(name), 2)
    end
    if loaded[name] ~= nil then return loaded[name] end
    local path = LUA_DIR .. "/" .. name:gsub("%.", "/") .. ".lua"
    local chunk, err = loadfile(path, "t", env)
    if not chunk then error("require: " .. err, 2) end
    local mod = chunk(name)
    if mod == nil then mod = true end
    loaded[name] = mod
    return mod
  end
  S.env = env
  S.require = env.require
  function S.advance(ms) S.clock = S.clock + ms end
  -- Loads a policy file (e.g. policies/examples/x.lua) into this state.
  function S.load_policy(path)
    local chunk, err = loadfile(path, "t", env)
    if not chunk then error(err, 2) end
    chunk()
    return env
  end
  function S.log_has(pattern)
    for _, l in ipairs(S.logs) do if l:find(pattern) then return true end end
    return false
  end
  return S
end

-- The broker's views -----------------------------------------------------

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

local MSG_FIELDS = { msg_id = true, type = true, src = true, dst = true, action = true,
                     correlation_id = true, timestamp = true, ttl_ms = true, payload = true,
                     topic = true }

-- A read-only msg view, as the broker passes it: fields of `t` (payload a
-- decoded table; numbers in it are floats as lua-cjson gives them),
-- msg:table() a fresh full copy; writing a field raises an error.
-- Defaults: type "request", msg_id "m-<n>".
local msg_seq = 0
function T.msg(t)
  msg_seq = msg_seq + 1
  local fields = deep_copy(t)
  fields.type = fields.type or "request"
  fields.msg_id = fields.msg_id or ("m-" .. msg_seq)
  if type(fields.payload) == "table" then
    -- as the broker decodes it: every number a float
    fields.payload = cjson.decode(cjson.encode(fields.payload))
    local function floats(x)
      for k, v in pairs(x) do
        if math.type(v) == "integer" then x[k] = v + 0.0 elseif type(v) == "table" then floats(v) end
      end
    end
    floats(fields.payload)
  end
  for k in pairs(fields) do assert(MSG_FIELDS[k], "T.msg: not a msg field: " .. k) end
  local view = {}
  return setmetatable(view, {
    __index = function(_, k)
      if k == "table" then return function() return deep_copy(fields) end end
      return fields[k]
    end,
    __newindex = function(_, k) error("msg is read-only (" .. tostring(k) .. ")", 2) end,
  })
end

-- A route ctx over `services` = {name = {{id=, load=}, ...}}; change it as
-- instances come and go. ctx.calls counts ctx.instances() calls.
function T.ctx(services)
  local ctx = { services_map = services, calls = 0 }
  function ctx.instances(name)
    ctx.calls = ctx.calls + 1
    local out = {}
    for i, inst in ipairs(services[name] or {}) do out[i] = { id = inst.id, load = inst.load or 0 } end
    return out
  end
  function ctx.has(name) return services[name] ~= nil and #services[name] > 0 end
  function ctx.services()
    local out = {}
    for name, list in pairs(services) do if #list > 0 then out[#out + 1] = name end end
    table.sort(out)
    return out
  end
  return ctx
end

-- A rule as smartshop.policy composes it, alone: a table with the rule's
-- composed hooks as methods (so r:filter(msg) applies its guards, types
-- and dsts, as the broker would see them) and the rule's other fields.
function T.via(rule)
  local hooks = T.sandbox().require("smartshop.policy").hooks { rule }
  local proxy = { rule = rule }
  for h, f in pairs(hooks) do proxy[h] = function(_, ...) return f(...) end end
  return setmetatable(proxy, { __index = rule })
end

-- A rule module whose new() returns T.via(rule).
function T.wrap(mod)
  return setmetatable({ new = function(opts) return T.via(mod.new(opts)) end }, { __index = mod })
end

-- Assertions -------------------------------------------------------------

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. show(v[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
T.show = show

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

function T.eq(got, want, what)
  if not same(got, want) then
    error((what and what .. ": " or "") .. "got " .. show(got) .. ", want " .. show(want), 2)
  end
end

function T.ok(v, what)
  if not v then error((what or "expected a true value") .. ", got " .. show(v), 2) end
  return v
end

-- fn must raise an error whose text contains `plain` (a plain substring).
function T.raises(fn, plain, what)
  local ok, err = pcall(fn)
  if ok then error((what or "expected an error") .. " containing " .. show(plain), 2) end
  if not tostring(err):find(plain, 1, true) then
    error((what or "error") .. ": " .. show(tostring(err)) .. " lacks " .. show(plain), 2)
  end
  return err
end

-- Calls f(...) and returns its results as a list (trailing nils dropped:
-- the broker reads a fixed number of results, so "x" and "x", nil agree).
function T.pack(f, ...)
  local t = table.pack(f(...))
  t.n = nil
  return t
end

-- Running ----------------------------------------------------------------

local cases = {}
function T.test(name, fn) cases[#cases + 1] = { name = name, fn = fn } end

local names = { ... }
if #names == 0 then
  local p = io.popen('ls "' .. script_dir .. '"')
  for f in p:lines() do
    local n = f:match("^test_(.+)%.lua$")
    if n then names[#names + 1] = n end
  end
  p:close()
end

local failed, passed = 0, 0
for _, n in ipairs(names) do
  cases = {}
  local file = script_dir .. "/test_" .. n .. ".lua"
  local env = setmetatable({ T = T }, { __index = _G })
  local chunk, err = loadfile(file, "t", env)
  if not chunk then
    io.stderr:write("FAIL ", n, ": ", err, "\n")
    failed = failed + 1
  else
    chunk()
    if #cases == 0 then          -- a file that tests nothing is a failure, not a pass
      io.stderr:write("FAIL ", n, ": no test in ", file, "\n")
      failed = failed + 1
    end
    for _, c in ipairs(cases) do
      local ok, e = xpcall(c.fn, debug.traceback)
      if ok then
        passed = passed + 1
      else
        failed = failed + 1
        io.stderr:write("FAIL ", n, ": ", c.name, "\n  ", tostring(e):gsub("\n", "\n  "), "\n")
      end
    end
  end
end
print(string.format("lua_lib %s: %d passed, %d failed", table.concat(names, " "), passed, failed))
os.exit(failed == 0 and 0 or 1)
