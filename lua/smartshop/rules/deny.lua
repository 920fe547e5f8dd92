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
