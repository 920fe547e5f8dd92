-- smartshop.rules.deny: refuse messages by sender, destination or action.
--
--   local deny = require "smartshop.rules.deny"
--   deny.new {
--     src    = { ["legacy-scraper"] = "this client is retired: use catalog-api" },
--     dst    = { "quarantine", "test-*" },
--     action = { drop_all_tables = "not on this bus", "debug_*" },
--     reason = "denied by policy",          -- for entries given without one
--   }
--
-- Options (at least one of src, dst, action):
--   src, dst, action  names to refuse: an array of patterns and/or a map
--                     pattern -> reason. A pattern is a name, "prefix*"
--                     or "*". Checked in the order src, dst, action; in
--                     each, exact names before "*" before prefixes.
--   reason            the reason for entries without their own
--                     (default "denied by policy").
--   types             message types refused (default {"request", "event"}:
--                     answers pass, refusing one would only leave its
--                     requester waiting for a timeout).
--   code              the error code (default nil: the broker's "denied").
--
-- Hook: filter. Refuses with false, reason, code.
-- Cost: a field read and a table look-up per list, plus a plain find per
-- prefix pattern; nothing allocated.

local util = require "smartshop.util"
local lookup = util.lookup

local MOD = "smartshop.rules.deny"
local TYPES = { request = true, response = true, error = true, event = true }

local _M = {}
local mt = { __index = _M }

-- Lists of exact names only (no "*", no prefix), the usual case: the
-- filter made for them reads just the fields listed and looks each up in
-- place. The budget's count hook traps on every VM instruction, so the
-- lists a rule does not have are not even looked at. nil if a list has
-- patterns.
local function exact_filter(self)
  local keys, maps = {}, {}
  for _, field in ipairs { "src", "dst", "action" } do
    local m = self[field]
    if m then
      if m.patterns then return nil end
      keys[#keys + 1], maps[#maps + 1] = field, m.exact
    end
  end
  local code = self.code
  local k1, e1, k2, e2, k3, e3 = keys[1], maps[1], keys[2], maps[2], keys[3], maps[3]
  if #keys == 1 then
    return function(_, msg)
      local r = e1[msg[k1]]
      if r then return false, r, code end
    end
  elseif #keys == 2 then
    return function(_, msg)
      local r = e1[msg[k1]]
      if r then return false, r, code end
      r = e2[msg[k2]]
      if r then return false, r, code end
    end
  end
  return function(_, msg)
    local r = e1[msg[k1]]
    if r then return false, r, code end
    r = e2[msg[k2]]
    if r then return false, r, code end
    r = e3[msg[k3]]
    if r then return false, r, code end
  end
end

function _M.new(opts)
  util.options(MOD, opts, {
    src = "table?", dst = "table?", action = "table?",
    reason = "string?", types = "table?", code = "string?",
  })
  local reason = opts.reason or "denied by policy"
  local self = {
    types = util.set(MOD, "types", opts.types or { "request", "event" }, TYPES),
    code = opts.code,
  }
  for _, field in ipairs { "src", "dst", "action" } do
    if opts[field] then
      local m = util.names(MOD, field, opts[field], reason)
      if not m.empty then self[field] = m end
    end
  end
  if not (self.src or self.dst or self.action) then
    util.fail(MOD, "give at least one of the options src, dst, action")
  end
  self.filter = exact_filter(self)      -- nil: the general one below
  return setmetatable(self, mt)
end

-- (self.types is the rule's guard: smartshop.policy checks msg.type.)
-- Exact names are one look-up in place; lookup() only for patterns.
function _M:filter(msg)
  local r, m, v
  m = self.src
  if m then
    v = msg.src
    r = m.exact[v]
    if r == nil and m.patterns then r = lookup(m, v) end
    if r then return false, r, self.code end
  end
  m = self.dst
  if m then
    v = msg.dst
    r = m.exact[v]
    if r == nil and m.patterns then r = lookup(m, v) end
    if r then return false, r, self.code end
  end
  m = self.action
  if m then
    v = msg.action
    r = m.exact[v]
    if r == nil and m.patterns then r = lookup(m, v) end
    if r then return false, r, self.code end
  end
end

return _M
