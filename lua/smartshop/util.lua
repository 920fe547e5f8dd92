-- smartshop.util: what the rule modules share (option checks, name
-- patterns, hashing). Not a rule; policies rarely need it directly.
--
--   local util = require "smartshop.util"
--   util.options("smartshop.rules.x", opts, { rate = "number", burst = "number?" })
--   local m = util.names("smartshop.rules.x", "src", { "a", "tools-*" }, true)
--   util.lookup(m, "tools-7")   --> true
--   util.fnv1a("text")          --> 32-bit FNV-1a hash
--
-- Errors raised by options() and fail() point at the line of the policy
-- that called the rule's constructor (level 3: fail -> new -> caller).

local type, pairs, ipairs, error, tostring, setmetatable = type, pairs, ipairs, error, tostring, setmetatable
local format, find, byte = string.format, string.find, string.byte
local tointeger = math.tointeger

local _M = {}

local function fail(mod, fmt, ...)
  error(mod .. ": " .. format(fmt, ...), 3)
end
_M.fail = fail

local function kind(v)
  local t = type(v)
  if t == "number" and tointeger(v) then return "integer", t end
  return t, t
end

-- Checks opts against spec {name = "type" | "type?"}: a table, no unknown
-- option, each of the declared type ("integer" = a whole number). Returns opts.
function _M.options(mod, opts, spec)
  if type(opts) ~= "table" then
    error(mod .. ": options must be a table, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    if spec[k] == nil then
      error(mod .. ": unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  for name, want in pairs(spec) do
    local optional = want:sub(-1) == "?"
    if optional then want = want:sub(1, -2) end
    local v = opts[name]
    if v == nil then
      if not optional then
        error(mod .. ": option '" .. name .. "' is required (" .. want .. ")", 3)
      end
    else
      local k, t = kind(v)
      if k ~= want and t ~= want then
        error(format("%s: option '%s' must be %s, got %s", mod, name,
                     want == "integer" and "an integer" or "a " .. want, k), 3)
      end
    end
  end
  return opts
end

-- A name matcher from a list of patterns: "name" (exact), "prefix*" (any
-- name starting with prefix) or "*" (any name). The list is an array of
-- patterns (each maps to `default`) and/or a map pattern -> value (a
-- string, e.g. a reason, or true). Returns {exact = {}, prefix = {p, v, ...},
-- any = v, patterns = (any "*" or prefix), empty = (no entry)}.
function _M.names(mod, opt, list, default)
  if type(list) ~= "table" then
    error(format("%s: option '%s' must be a list of names, got %s", mod, opt, type(list)), 3)
  end
  local m = { exact = {}, prefix = {}, any = nil, empty = true }
  local function add(pattern, value)
    if type(pattern) ~= "string" or pattern == "" then
      error(format("%s: option '%s': a name must be a non-empty string, got %s",
                   mod, opt, tostring(pattern)), 4)
    end
    if value ~= true and type(value) ~= "string" then
      error(format("%s: option '%s': the value for '%s' must be a string or true",
                   mod, opt, pattern), 4)
    end
    if value == true and default ~= nil then value = default end
    m.empty = false
    if pattern == "*" then
      m.any = value
    elseif pattern:sub(-1) == "*" then
      local p = m.prefix
      p[#p + 1] = pattern:sub(1, -2)
      p[#p + 1] = value
    elseif find(pattern, "*", 1, true) then
      error(format("%s: option '%s': '%s': '*' may only end a name", mod, opt, pattern), 4)
    else
      m.exact[pattern] = value
    end
  end
  local n = #list
  for i = 1, n do add(list[i], default) end
  for k, v in pairs(list) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then add(k, v) end
  end
  m.patterns = m.any ~= nil or #m.prefix > 0   -- false: exact names only
  return m
end

-- The value a name matches in m (exact first, then "*", then prefixes in
-- the order given), or nil. No allocation.
function _M.lookup(m, s)
  if s == nil then return nil end
  local v = m.exact[s]
  if v ~= nil then return v end
  if m.any ~= nil then return m.any end
  local p = m.prefix
  for i = 1, #p, 2 do
    if find(s, p[i], 1, true) == 1 then return p[i + 1] end
  end
  return nil
end

-- A set {value = true} from an array of strings (for option lists such as
-- types = {"request", "event"}); `allowed` (a set) limits the values.
function _M.set(mod, opt, list, allowed)
  if type(list) ~= "table" then
    error(format("%s: option '%s' must be a list, got %s", mod, opt, type(list)), 3)
  end
  local s = {}
  for _, v in ipairs(list) do
    if type(v) ~= "string" or (allowed and not allowed[v]) then
      error(format("%s: option '%s': unexpected value %s", mod, opt, tostring(v)), 3)
    end
    s[v] = true
  end
  return s
end

-- FNV-1a, 32 bits, of s, continuing from h (the offset basis by default):
-- fnv1a(b, fnv1a(a)) == fnv1a(a .. b), so a key's hash is computed once
-- and extended with each instance id without building a string.
function _M.fnv1a(s, h)
  h = h or 2166136261
  for i = 1, #s do
    h = ((h ~ byte(s, i)) * 16777619) & 0xffffffff
  end
  return h
end

-- A payload value as a key: strings as they are, integral numbers without
-- ".0" (JSON 3 decodes as 3.0), other numbers and booleans by tostring;
-- nil for nil, json.null, tables.
function _M.key(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    local i = tointeger(v)
    if i then return format("%d", i) end
    return tostring(v)
  end
  if t == "boolean" then return tostring(v) end
  return nil
end

-- A bounded map: at most `max` keys, in two generations. get() finds a key
-- in either (moving it to the current one); when the current generation
-- holds max/2 keys, the older one is dropped. So memory stays bounded and
-- a key not used during the last max/2 new keys is the one forgotten.
local Bounded = {}
Bounded.__index = Bounded

function _M.bounded(max)
  local half = max // 2
  if half < 1 then half = 1 end
  return setmetatable({ cur = {}, old = {}, n = 0, half = half }, Bounded)
end

function Bounded:get(k)
  local v = self.cur[k]
  if v ~= nil then return v end
  v = self.old[k]
  if v ~= nil then
    self.old[k] = nil
    self:put(k, v)
  end
  return v
end

function Bounded:put(k, v)
  local cur = self.cur
  if cur[k] == nil then
    if self.n >= self.half then
      self.old, cur = cur, {}
      self.cur, self.n = cur, 0
    end
    self.n = self.n + 1
  end
  cur[k] = v
end

-- How many keys are held (both generations), for tests and logs.
function Bounded:count()
  local n = 0
  for _ in pairs(self.old) do n = n + 1 end
  return n + self.n
end

return _M
