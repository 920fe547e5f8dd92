-- smartshop.rules.canary: a share of a service's requests to its canary.
--
--   local canary = require "smartshop.rules.canary"
--   canary.new { service = "checkout", canary = "checkout-canary", percent = 10 }
--
-- While the canary name has a live instance (ctx.has), `percent` of the
-- service's requests go to it; without one, all go to the service. Events
-- are not split.
--
-- Two ways to choose (option sticky):
--   sticky = true (default): by sender. Each src hashes (FNV-1a of the
--     service name and src) to a point in 0..99 and goes to the canary if
--     that point is below percent, so a sender always lands on the same
--     side, and raising percent only moves senders to the canary (none
--     back). The share is percent of senders, not of requests.
--   sticky = false: counted. Exactly percent requests in every 100 go to
--     the canary, evenly spread (credit accrues per request), whoever
--     sends them; the canary's share in `stats` is what you configured.
--
-- Options: service, canary (names), percent (0..100), sticky (boolean),
--   max_senders (sticky only: senders whose point is cached, default 10000;
--   past that the point is recomputed, which costs a short hash).
--
-- Hook: route. Cost: a look-up per request to the service (sticky), or
-- an addition (counted); ctx.has() once per such request.

local util = require "smartshop.util"
local fnv1a = util.fnv1a

local MOD = "smartshop.rules.canary"

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts, {
    service = "string", canary = "string", percent = "number",
    sticky = "boolean?", max_senders = "integer?",
  })
  if opts.service == opts.canary then util.fail(MOD, "option 'canary' must differ from 'service'") end
  if not (opts.percent >= 0 and opts.percent <= 100) then
    util.fail(MOD, "option 'percent' must be within 0..100, got %s", tostring(opts.percent))
  end
  local sticky = opts.sticky ~= false
  local max = opts.max_senders or 10000
  if max < 2 then util.fail(MOD, "option 'max_senders' must be at least 2") end
  return setmetatable({
    service = opts.service, canary = opts.canary, percent = opts.percent,
    sticky = sticky, credit = 0,
    types = { request = true }, dsts = { [opts.service] = true },   -- guards
    seed = fnv1a(opts.service .. "\0"),
    points = sticky and util.bounded(max) or nil,
  }, mt)
end

-- The sender's point in 0..99 (sticky mode).
function _M:point(src)
  local p = self.points:get(src)
  if p == nil then
    p = fnv1a(src, self.seed) % 100
    self.points:put(src, p)
  end
  return p
end

function _M:route(msg, ctx)
  if not ctx.has(self.canary) then return end
  if self.sticky then
    local src = msg.src
    if src ~= nil and self:point(src) < self.percent then return self.canary end
    return
  end
  local points = self.credit + self.percent
  if points >= 100 then
    self.credit = points - 100
    return self.canary
  end
  self.credit = points
end

return _M
