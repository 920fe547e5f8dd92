local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options are checked at load", function()
  local breaker = T.wrap(T.sandbox().require "smartshop.rules.breaker")
  raises(function() breaker.new {} end, "option 'service' is required")
  raises(function() breaker.new { service = "p", failures = 0 } end, "option 'failures' must be at least 1")
  raises(function() breaker.new { service = "p", failures = 2.5 } end, "option 'failures' must be an integer")
  raises(function() breaker.new { service = "p", open_ms = 0 } end, "option 'open_ms' must be > 0")
  raises(function() breaker.new { service = "p", fallback = "p" } end, "'fallback' must differ")
  raises(function() breaker.new { service = "p", outcomes = { "ok" } } end, "\"ok\" cannot be a bad outcome")
  raises(function() breaker.new { service = "p", outcomes = { "slow" } } end, "unexpected value slow")
  raises(function() breaker.new { service = "p", threshold = 3 } end, "unknown option 'threshold'")
end)

test("hooks: route with a fallback, filter without; on_outcome always", function()
  local S = T.sandbox()
  local breaker = T.wrap(S.require "smartshop.rules.breaker")
  local policy = S.require "smartshop.policy"
  local with = policy.hooks { breaker.new { service = "p", fallback = "p-lua" } }
  ok(with.route and with.on_outcome and not with.filter)
  local without = policy.hooks { breaker.new { service = "p" } }
  ok(without.filter and without.on_outcome and not without.route)
end)

local function out(service, outcome, code)
  return { service = service, instance = "i", src = "ui", action = "pay", outcome = outcome,
           code = code, latency_ms = 5 }
end

test("fallback: closed, open, half-open probe, open again, close", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local b = T.wrap(S.require "smartshop.rules.breaker").new {
    service = "payments", failures = 3, window_ms = 1000, open_ms = 5000, fallback = "payments-lua",
  }
  local h = policy.hooks { b }
  local ctx = T.ctx {}
  local function route() return h.route(msg { dst = "payments" }, ctx) end

  eq(b:state(), "closed")
  eq(route(), nil)
  h.on_outcome(out("payments", "timeout"))
  S.advance(600)
  h.on_outcome(out("payments", "error", "internal"))
  h.on_outcome(out("payments", "ok"))
  h.on_outcome(out("other", "timeout"))
  h.on_outcome(out("payments-lua", "timeout"))
  eq({ b:state() }, { "closed", 2, 0 })
  S.advance(600)                       -- the first failure falls out of the window
  h.on_outcome(out("payments", "gone"))
  eq(b:state(), "closed", "2 failures in the window, not 3")
  eq(route(), nil)
  S.advance(100)
  h.on_outcome(out("payments", "timeout"))
  eq({ b:state() }, { "open", 0, 5000 })
  ok(S.log_has("WARN breaker payments: open %(3 bad outcomes within 1000 ms%); routing to payments%-lua"))
  eq(route(), "payments-lua")
  eq(h.route(msg { type = "event", dst = "payments" }, ctx), nil, "events are not affected")
  eq(h.route(msg { dst = "orders" }, ctx), nil)
  h.on_outcome(out("payments", "ok"))  -- a late answer while open: ignored
  S.advance(4999)
  eq(route(), "payments-lua")
  S.advance(1)
  eq(b:state(), "half_open")
  eq(route(), nil, "the probe goes to the service")
  ok(S.log_has("half%-open"))
  eq(route(), "payments-lua", "one probe at a time")
  h.on_outcome(out("payments", "timeout"))
  eq(b:state(), "open", "a failed probe opens it again")
  eq(route(), "payments-lua")
  S.advance(5000)
  eq(route(), nil, "the next probe")
  h.on_outcome(out("payments", "ok"))
  eq({ b:state() }, { "closed", 0, 0 })
  ok(S.log_has("closed: the probe succeeded"))
  for _ = 1, 5 do eq(route(), nil) end
  h.on_outcome(out("payments", "timeout"))
  h.on_outcome(out("payments", "timeout"))
  eq(b:state(), "closed", "the count started again from zero")
end)

test("fail fast: refused with unavailable while open, probe, close", function()
  local S = T.sandbox()
  local b = T.wrap(S.require "smartshop.rules.breaker").new {
    service = "payments", failures = 2, window_ms = 1000, open_ms = 2000, quiet = true,
  }
  local function filter() return T.pack(b.filter, b, msg { dst = "payments" }) end
  eq(filter(), {})
  b:on_outcome(out("payments", "error", "internal"))
  b:on_outcome(out("payments", "timeout"))
  eq(b:state(), "open")
  eq(#S.logs, 0, "quiet")
  eq(filter(), { false, "circuit open: payments is failing", "unavailable" })
  eq(T.pack(b.filter, b, msg { type = "response", dst = "payments" }), {}, "answers pass")
  S.advance(2000)
  eq(filter(), {}, "the probe")
  eq(filter()[3], "unavailable", "the others wait for the probe")
  b:on_outcome(out("payments", "ok"))
  eq(b:state(), "closed")
  eq(filter(), {})
end)

test("a probe without outcome lets another go after probe_ms; error_codes", function()
  local S = T.sandbox()
  local b = T.wrap(S.require "smartshop.rules.breaker").new {
    service = "p", failures = 1, open_ms = 100, probe_ms = 300, error_codes = { "internal" }, quiet = true,
  }
  local function admitted() return b:filter(msg { dst = "p" }) == nil end
  b:on_outcome(out("p", "error", "bad_payload"))
  eq(b:state(), "closed", "a client's error is not the service failing")
  b:on_outcome(out("p", "error", "internal"))
  eq(b:state(), "open")
  S.advance(100)
  ok(admitted(), "probe 1")
  S.advance(299)
  ok(not admitted())
  S.advance(1)
  ok(admitted(), "probe 2, the first never came back")
  b:on_outcome(out("p", "gone"))
  eq(b:state(), "open")
end)

test("outcomes of requests sent before the circuit opened are ignored", function()
  local S = T.sandbox()
  local b = T.wrap(S.require "smartshop.rules.breaker").new {
    service = "p", failures = 2, window_ms = 60000, open_ms = 1000, quiet = true,
  }
  local function late(outcome, sent_ms_ago)
    local o = out("p", outcome)
    o.latency_ms = sent_ms_ago
    b:on_outcome(o)
  end
  local function admitted() return b:filter(msg { dst = "p" }) == nil end
  late("timeout", 5)
  late("timeout", 5)
  eq(b:state(), "open")
  S.advance(1000)
  ok(admitted(), "the probe")
  eq(b:state(), "half_open")
  -- requests handed over before the open, ending now: old news
  late("ok", 1500)
  eq(b:state(), "half_open", "an ok from before the open is not the probe's")
  late("timeout", 1200)
  eq(b:state(), "half_open", "a timeout from before the open does not open it again")
  late("ok", 3)                        -- the probe
  eq(b:state(), "closed")
  -- closed again: the rest of the old requests time out; they do not count
  S.advance(20000)
  for _ = 1, 5 do late("timeout", 21500) end
  eq({ b:state() }, { "closed", 0, 0 }, "stale timeouts after the close")
  late("timeout", 10)
  late("timeout", 10)
  eq(b:state(), "open", "new failures still count")
end)
