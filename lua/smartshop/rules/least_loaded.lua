-- smartshop.rules.least_loaded: each request to the instance with the
-- fewest requests in flight; instances tied for the fewest take turns.
--
--   local least_loaded = require "smartshop.rules.least_loaded"
--   least_loaded.new { services = { "work", "report-*" } }   -- or {} for all
--
-- Use it when requests differ a lot in cost, so that a slow instance is
-- not handed as many as a fast one (plain round-robin does that). Events
-- are not counted as load and go round-robin.
--
-- Options:
--   services  the services it applies to (names, "prefix*", "*"); default
--             every service.
--
-- Hook: route. Cost: ctx.instances() (a table per call, built by the
-- broker) and two passes over it; nothing allocated here.

local util = require "smartshop.util"
local lookup = util.lookup

local MOD = "smartshop.rules.least_loaded"

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts or {}, { services = "table?" })
  local services = opts and opts.services
  local m = services and util.names(MOD, "services", services, true)
  return setmetatable({ services = (m and not m.empty) and m or nil, turn = 0,
                        types = { request = true } }, mt)   -- guard
end

function _M:route(msg, ctx)
  local dst = msg.dst
  if self.services and not lookup(self.services, dst) then return end
  local instances = ctx.instances(dst)
  local n = #instances
  if n == 0 then return end                 -- the broker says no_such_service
  local fewest, ties = math.huge, 0
  for i = 1, n do
    local load = instances[i].load
    if load < fewest then
      fewest, ties = load, 1
    elseif load == fewest then
      ties = ties + 1
    end
  end
  local turn = self.turn + 1
  self.turn = turn
  local pick = turn % ties + 1
  for i = 1, n do
    local inst = instances[i]
    if inst.load == fewest then
      pick = pick - 1
      if pick == 0 then return dst, inst.id end
    end
  end
end

return _M
