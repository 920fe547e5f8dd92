-- smartshop.rules.alias: an old service name reaches its new name.
--
--   local alias = require "smartshop.rules.alias"
--   alias.new { aliases = { inventory = "inventory-v2", ["user-service"] = "accounts" } }
--
-- Requests and events for an old name go to the new name while it has a
-- live instance; until then the old name is served as before (or answered
-- no_such_service if nobody holds it either). The message is forwarded as
-- the very bytes sent: its dst stays the old name (P1), so the new service
-- must not insist on its own name in dst. Answers need no rule.
--
-- Options:
--   aliases  old name -> new name (names, not patterns).
--   always   true: route to the new name even while it has no instance
--            (the sender then gets no_such_service). Default false.
--
-- Hook: route. Cost: one table look-up; ctx.has() for aliased names only.

local util = require "smartshop.util"
local type, pairs = type, pairs

local MOD = "smartshop.rules.alias"

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts, { aliases = "table", always = "boolean?" })
  local map, any = {}, false
  for old, new in pairs(opts.aliases) do
    if type(old) ~= "string" or type(new) ~= "string" or old == "" or new == "" then
      util.fail(MOD, "option 'aliases': each entry is old name = \"new name\"")
    end
    if old == new then util.fail(MOD, "option 'aliases': %s is an alias of itself", old) end
    map[old], any = new, true
  end
  if not any then util.fail(MOD, "option 'aliases' is empty") end
  -- guard (smartshop.policy): only the old names are routed here
  return setmetatable({ map = map, dsts = map, always = opts.always or false }, mt)
end

function _M:route(msg, ctx)
  local new = self.map[msg.dst]
  if new and (self.always or ctx.has(new)) then
    return new
  end
end

return _M
