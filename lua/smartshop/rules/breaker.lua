-- smartshop.rules.breaker: a circuit breaker for one service.
--
--   local breaker = require "smartshop.rules.breaker"
--   local payments = breaker.new {
--     service   = "payments",
--     failures  = 5,          -- bad outcomes ...
--     window_ms = 10000,      -- ... within this window open the circuit
--     open_ms   = 5000,       -- how long it stays open before a probe
--     fallback  = "payments-fallback",  -- optional: else fail fast
--   }
--   policy.use { payments, ... }
--   log.info("payments breaker: " .. payments:state())
--
-- States:
--   closed     requests go to the service. Each bad outcome (on_outcome:
--              "error", "timeout" or "gone" for this service) is noted;
--              `failures` of them within `window_ms` open the circuit.
--   open       for `open_ms`, requests for the service go to `fallback`
--              (a route: e.g. a Lua service answering from a cache), or,
--              without a fallback, are refused at once with code
--              "unavailable" (no request waits for a timeout).
--   half_open  after open_ms the next request is let through as a probe;
--              while it is out, the others are treated as when open. A
--              good outcome ("ok") closes the circuit, a bad one opens it
--              again for open_ms. A probe with no outcome after `probe_ms`
--              (it was refused further on, say) lets another probe go.
-- Outcomes are matched by the name the request was delivered to, so the
-- fallback's own outcomes do not count for the service. The outcome of a
-- request that reached the broker before the circuit last opened (its end
-- minus latency_ms) is ignored, in every state: it tells of the failure
-- already acted on, so a late ok is not taken for the probe's, and the
-- timeouts of requests stuck since then neither open a half-open circuit
-- again nor count once it has closed. Events are not affected.
--
-- Options:
--   service      the service guarded (a name).
--   failures     bad outcomes that open the circuit (integer >= 1, default 5).
--   window_ms    the window they must fall in (default 10000).
--   open_ms      time open before a probe (default 5000).
--   probe_ms     how long a probe may stay without outcome (default: open_ms).
--   fallback     a service name to route to while open; none: fail fast.
--   outcomes     which outcomes are bad (default {"error", "timeout", "gone"}).
--   error_codes  if given, an "error" outcome is bad only with one of these
--                codes (e.g. {"internal", "unavailable"}: a client's
--                bad_payload is not the service failing).
--   reason       fail-fast reason (default "circuit open: <service> is failing").
--   quiet        true: no log line on each change of state (default false).
--
-- Hooks: on_outcome, and route (with a fallback) or filter (fail fast).
-- breaker:state() -> "closed" | "open" | "half_open", bad outcomes in the
-- current window (closed), ms until the next probe (open).
-- Cost: closed: a field read and a comparison per request to the service;
-- one now_ms() and a ring write per bad outcome; nothing allocated.

local util = require "smartshop.util"
local now_ms, log = now_ms, log

local MOD = "smartshop.rules.breaker"
local OUTCOMES = { ok = true, error = true, timeout = true, gone = true }

local _M = {}
local mt = { __index = _M }

local function say(self, level, text)
  if not self.quiet and log then log[level]("breaker " .. self.service .. ": " .. text) end
end

local NEVER = -math.huge

local function forget(self)
  local ring = self.ring
  for i = 1, self.failures do ring[i] = NEVER end
  self.count, self.pos = 0, 1
end

local function open(self, now, why)
  self.st, self.opened_at, self.probe_at = "open", now, nil
  forget(self)
  say(self, "warn", "open (" .. why .. "); " ..
      (self.fallback and ("routing to " .. self.fallback) or "failing fast") ..
      " for " .. self.open_ms .. " ms")
end

-- true: let this request through to the service; false: it is the
-- circuit's (fallback or refusal).
local function admit(self)
  local st = self.st
  if st == "closed" then return true end
  local now = now_ms()
  if st == "open" then
    if now - self.opened_at < self.open_ms then return false end
    self.st = "half_open"
    say(self, "info", "half-open: one probe goes through")
  elseif self.probe_at and now - self.probe_at < self.probe_ms then
    return false
  end
  self.probe_at = now
  return true
end

local function route_fallback(self, msg)
  if not admit(self) then return self.fallback end
end

local function filter_fail_fast(self, msg)
  if not admit(self) then return false, self.reason, "unavailable" end
end

function _M.new(opts)
  util.options(MOD, opts, {
    service = "string", failures = "integer?", window_ms = "number?", open_ms = "number?",
    probe_ms = "number?", fallback = "string?", outcomes = "table?", error_codes = "table?",
    reason = "string?", quiet = "boolean?",
  })
  local n = opts.failures or 5
  if n < 1 then util.fail(MOD, "option 'failures' must be at least 1") end
  for _, k in ipairs { "window_ms", "open_ms", "probe_ms" } do
    if opts[k] ~= nil and not (opts[k] > 0) then util.fail(MOD, "option '%s' must be > 0", k) end
  end
  if opts.fallback == opts.service then util.fail(MOD, "option 'fallback' must differ from 'service'") end
  local bad = util.set(MOD, "outcomes", opts.outcomes or { "error", "timeout", "gone" }, OUTCOMES)
  if bad.ok then util.fail(MOD, "option 'outcomes': \"ok\" cannot be a bad outcome") end
  local self = {
    service = opts.service, failures = n,
    window_ms = opts.window_ms or 10000, open_ms = opts.open_ms or 5000,
    fallback = opts.fallback, bad = bad,
    codes = opts.error_codes and util.set(MOD, "error_codes", opts.error_codes) or nil,
    reason = opts.reason or ("circuit open: " .. opts.service .. " is failing"),
    quiet = opts.quiet or false,
    st = "closed", ring = {}, pos = 1, count = 0,
    types = { request = true }, dsts = { [opts.service] = true },   -- guards
  }
  self.probe_ms = opts.probe_ms or self.open_ms
  forget(self)
  if self.fallback then self.route = route_fallback else self.filter = filter_fail_fast end
  return setmetatable(self, mt)
end

function _M:on_outcome(o)
  if o.service ~= self.service then return end
  local opened_at = self.opened_at
  if opened_at and now_ms() - (o.latency_ms or 0) < opened_at then
    return            -- a request handed over before the circuit last opened
  end
  local outcome = o.outcome
  local is_bad = self.bad[outcome] == true
  if is_bad and outcome == "error" and self.codes and not self.codes[o.code] then
    is_bad = false
  end
  local st = self.st
  if st == "half_open" then
    if is_bad then
      open(self, now_ms(), "the probe failed: " .. tostring(outcome))
    elseif outcome == "ok" then
      self.st, self.probe_at = "closed", nil
      forget(self)
      say(self, "info", "closed: the probe succeeded")
    end
  elseif st == "closed" and is_bad then
    local now = now_ms()
    local ring, pos, n = self.ring, self.pos, self.failures
    ring[pos] = now
    pos = pos % n + 1                          -- now the oldest of the last n
    self.pos = pos
    local count = self.count + 1
    if count > n then count = n end
    self.count = count
    if count == n and now - ring[pos] <= self.window_ms then
      open(self, now, n .. " bad outcomes within " .. self.window_ms .. " ms")
    end
  end
end

function _M:state()
  local st = self.st
  if st == "open" then
    local left = self.open_ms - (now_ms() - self.opened_at)
    if left <= 0 then return "half_open", 0, 0 end
    return "open", 0, left
  end
  if st == "closed" then
    local now, n = now_ms(), 0
    local ring = self.ring
    for i = 1, self.failures do
      if now - ring[i] <= self.window_ms then n = n + 1 end
    end
    return "closed", n, 0
  end
  return st, 0, 0
end

return _M
