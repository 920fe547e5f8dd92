-- smartshop.rules.rate_limit: a token bucket per sender.
--
--   local rate_limit = require "smartshop.rules.rate_limit"
--   rate_limit.new { rate = 20, burst = 20 }
--
-- Each sender (msg.src) has a bucket of `burst` tokens, refilled at `rate`
-- tokens a second; a message takes one, and one that finds the bucket
-- empty is refused. So a sender may send `burst` at once, then `rate` a
-- second. A new sender starts with a full bucket.
--
-- Options:
--   rate         tokens per second (> 0).
--   burst        bucket size (>= 1; default: rate, at least 1).
--   max_senders  senders tracked at most (default 10000, >= 2). Memory is
--                bounded: the senders are kept in two generations; when
--                the current one holds max_senders/2, the older one is
--                dropped, so a sender unseen during the last max_senders/2
--                new senders is forgotten (and starts again full).
--   types        message types counted (default {"request"}).
--   exempt_dst   destinations not counted (default {"broker"}: ping, stats).
--   only_dst     if given, only messages to these destinations count.
--   reason       the refusal's reason (default "rate limit").
--   code         the error code (default nil: "denied").
--
-- Hook: filter. Clock: now_ms() (monotonic milliseconds).
-- Cost: two table look-ups and some arithmetic; a table per new sender.

local util = require "smartshop.util"
local lookup = util.lookup
local now_ms = now_ms

local MOD = "smartshop.rules.rate_limit"
local TYPES = { request = true, response = true, error = true, event = true }

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts, {
    rate = "number", burst = "number?", max_senders = "integer?", types = "table?",
    exempt_dst = "table?", only_dst = "table?", reason = "string?", code = "string?",
  })
  if not (opts.rate > 0) or opts.rate == math.huge then
    util.fail(MOD, "option 'rate' must be a positive number of tokens a second")
  end
  local burst = opts.burst or math.max(opts.rate, 1)
  if not (burst >= 1) or burst == math.huge then
    util.fail(MOD, "option 'burst' must be at least 1")
  end
  local max = opts.max_senders or 10000
  if max < 2 then util.fail(MOD, "option 'max_senders' must be at least 2") end
  local exempt = util.names(MOD, "exempt_dst", opts.exempt_dst or { "broker" }, true)
  return setmetatable({
    per_ms = opts.rate / 1000, burst = burst,
    buckets = util.bounded(max),
    types = util.set(MOD, "types", opts.types or { "request" }, TYPES),
    exempt = not exempt.empty and exempt or nil,
    only = opts.only_dst and util.names(MOD, "only_dst", opts.only_dst, true) or nil,
    reason = opts.reason or "rate limit", code = opts.code,
  }, mt)
end

-- (self.types is the rule's guard: smartshop.policy checks msg.type)
function _M:filter(msg)
  if self.exempt or self.only then
    local dst = msg.dst
    if self.exempt and lookup(self.exempt, dst) then return end
    if self.only and not lookup(self.only, dst) then return end
  end
  local src = msg.src
  if src == nil then return end
  local now = now_ms()
  local buckets = self.buckets
  local b = buckets:get(src)
  if b == nil then
    buckets:put(src, { self.burst - 1, now })
    return
  end
  local tokens = b[1] + (now - b[2]) * self.per_ms
  if tokens > self.burst then tokens = self.burst end
  b[2] = now
  if tokens < 1 then
    b[1] = tokens
    return false, self.reason, self.code
  end
  b[1] = tokens - 1
end

-- Tokens left for a sender (nil if not tracked), and senders tracked.
function _M:peek(src)
  local b = self.buckets:get(src)
  return b and b[1], self.buckets:count()
end

return _M
