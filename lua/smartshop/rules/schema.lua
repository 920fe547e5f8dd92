-- smartshop.rules.schema: check a payload against a small declared schema.
--
--   local schema = require "smartshop.rules.schema"
--   schema.new {
--     service = "orders",
--     actions = {
--       create = {
--         sku      = { type = "string", required = true, max_len = 32 },
--         qty      = { type = "integer", required = true, min = 1, max = 100 },
--         priority = { type = "string", enum = { "low", "normal", "high" } },
--         gift     = { type = "boolean" },
--       },
--       cancel = { order_id = { type = "string", required = true } },
--     },
--     extra = false,           -- refuse fields the schema does not name
--   }
--
-- Requests and events for `service` whose action is listed must have an
-- object payload matching that action's fields; anything else is refused
-- with code bad_payload and a message naming the field, e.g.
--   "orders create: field 'qty' must be an integer"
--   "orders create: field 'sku' is required"
-- Actions not listed pass unchecked.
--
-- A field's spec:
--   type      "string", "number", "integer" (a whole number), "boolean" or
--             "table" (any JSON object or array). Required.
--   required  true: the field must be present (JSON null counts as absent).
--   min, max  numbers: bounds on the value (inclusive).
--   min_len, max_len  strings: bounds on the length in characters (UTF-8;
--             a string that is not valid UTF-8 counts its bytes).
--   enum      a list of the values allowed (strings or numbers).
--
-- Options: service (a name), actions (action -> fields), extra (default
-- true: fields not in the schema are allowed), types (default
-- {"request", "event"}).
--
-- Hook: filter. Cost, for a listed action only: the payload's decode and
-- a look-up and a comparison or two per declared field (plus one pass over
-- the payload with extra = false). Other messages: two field reads.

local util = require "smartshop.util"
local type, pairs, ipairs, tostring, format = type, pairs, ipairs, tostring, string.format
local tointeger, ulen = math.tointeger, utf8.len
local null = json and json.null

local MOD = "smartshop.rules.schema"
local TYPES = { request = true, response = true, error = true, event = true }
local FIELD_TYPES = { string = true, number = true, integer = true, boolean = true, table = true }
local SPEC_KEYS = { type = true, required = true, min = true, max = true,
                    min_len = true, max_len = true, enum = true }

local _M = {}
local mt = { __index = _M }

local function compile_field(where, name, spec)
  if type(name) ~= "string" or type(spec) ~= "table" then
    util.fail(MOD, "%s: each field is name = { type = ... }", where)
  end
  local at = where .. "." .. name
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then util.fail(MOD, "%s: unknown key '%s'", at, tostring(k)) end
  end
  if not FIELD_TYPES[spec.type] then
    util.fail(MOD, "%s: type must be string, number, integer, boolean or table, got %s",
              at, tostring(spec.type))
  end
  local f = { name = name, type = spec.type, required = spec.required == true }
  if spec.required ~= nil and type(spec.required) ~= "boolean" then
    util.fail(MOD, "%s: required must be true or false", at)
  end
  for _, k in ipairs { "min", "max" } do
    if spec[k] ~= nil then
      if type(spec[k]) ~= "number" or (f.type ~= "number" and f.type ~= "integer") then
        util.fail(MOD, "%s: %s is a number, for number and integer fields", at, k)
      end
      f[k] = spec[k]
    end
  end
  for _, k in ipairs { "min_len", "max_len" } do
    if spec[k] ~= nil then
      if not tointeger(spec[k]) or spec[k] < 0 or f.type ~= "string" then
        util.fail(MOD, "%s: %s is a whole number >= 0, for string fields", at, k)
      end
      f[k] = spec[k]
    end
  end
  if spec.enum ~= nil then
    if type(spec.enum) ~= "table" or #spec.enum == 0 then
      util.fail(MOD, "%s: enum is a non-empty list of values", at)
    end
    local set, shown = {}, {}
    for _, v in ipairs(spec.enum) do
      if type(v) ~= "string" and type(v) ~= "number" then
        util.fail(MOD, "%s: enum values are strings or numbers", at)
      end
      set[v] = true
      shown[#shown + 1] = tostring(v)
    end
    f.enum, f.enum_text = set, table.concat(shown, ", ")
  end
  return f
end

function _M.new(opts)
  util.options(MOD, opts, { service = "string", actions = "table", extra = "boolean?", types = "table?" })
  local actions, any = {}, false
  for action, fields in pairs(opts.actions) do
    if type(action) ~= "string" or type(fields) ~= "table" then
      util.fail(MOD, "option 'actions': each entry is action = { field = spec, ... }")
    end
    local list, by_name = {}, {}
    for name, spec in pairs(fields) do
      local f = compile_field("actions." .. action, name, spec)
      list[#list + 1] = f
      by_name[name] = f
    end
    table.sort(list, function(a, b) return a.name < b.name end)  -- stable messages
    actions[action] = { fields = list, by_name = by_name,
                        prefix = opts.service .. " " .. action .. ": " }
    any = true
  end
  if not any then util.fail(MOD, "option 'actions' is empty") end
  return setmetatable({
    service = opts.service, actions = actions, extra = opts.extra ~= false,
    types = util.set(MOD, "types", opts.types or { "request", "event" }, TYPES),   -- guards
    dsts = { [opts.service] = true },
  }, mt)
end

-- nil if v suits f, else what is wrong (after "field 'x' ").
local function check(f, v)
  local t, want = type(v), f.type
  if want == "integer" then
    if t ~= "number" or not tointeger(v) then return "must be an integer" end
  elseif want ~= t then
    return "must be " .. (want == "table" and "an object or array" or "a " .. want)
  end
  if f.min and v < f.min then return "must be at least " .. tostring(f.min) end
  if f.max and v > f.max then return "must be at most " .. tostring(f.max) end
  if f.min_len or f.max_len then
    local n = ulen(v) or #v
    if f.min_len and n < f.min_len then return format("must be at least %d characters", f.min_len) end
    if f.max_len and n > f.max_len then return format("must be at most %d characters", f.max_len) end
  end
  if f.enum and not f.enum[v] then return "must be one of " .. f.enum_text end
  return nil
end

-- nil if payload suits the action's schema, else the refusal's message.
function _M.validate(action, payload)
  if type(payload) ~= "table" then
    return action.prefix .. "payload must be an object"
  end
  local fields = action.fields
  for i = 1, #fields do
    local f = fields[i]
    local v = payload[f.name]
    if v == nil or v == null then
      if f.required then return action.prefix .. "field '" .. f.name .. "' is required" end
    else
      local bad = check(f, v)
      if bad then return action.prefix .. "field '" .. f.name .. "' " .. bad end
    end
  end
  return nil
end

function _M:filter(msg)
  local action = self.actions[msg.action]
  if not action then return end
  local payload = msg.payload
  local bad = _M.validate(action, payload)
  if not bad and not self.extra then
    local by_name = action.by_name
    for k in pairs(payload) do
      if not by_name[k] then
        bad = action.prefix .. "field '" .. tostring(k) .. "' is not allowed"
        break
      end
    end
  end
  if bad then return false, bad, "bad_payload" end
end

return _M
