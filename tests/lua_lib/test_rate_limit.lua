local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options are checked at load", function()
  local rl = T.wrap(T.sandbox().require "smartshop.rules.rate_limit")
  raises(function() rl.new {} end, "option 'rate' is required")
  raises(function() rl.new { rate = 0 } end, "option 'rate' must be a positive number")
  raises(function() rl.new { rate = "10" } end, "option 'rate' must be a number, got string")
  raises(function() rl.new { rate = 10, burst = 0.5 } end, "option 'burst' must be at least 1")
  raises(function() rl.new { rate = 10, max_senders = 1 } end, "option 'max_senders' must be at least 2")
  raises(function() rl.new { rate = 10, max_senders = 2.5 } end, "option 'max_senders' must be an integer")
  raises(function() rl.new { rate = 10, per = "second" } end, "unknown option 'per'")
end)

local function send(r, src, dst, type_)
  return r:filter(msg { src = src, dst = dst or "search", type = type_ }) ~= false
end

test("burst at once, then refill at rate; senders apart", function()
  local S = T.sandbox()
  local rl = T.wrap(S.require "smartshop.rules.rate_limit")
  local r = rl.new { rate = 10, burst = 5 }
  for i = 1, 5 do ok(send(r, "a"), "burst " .. i) end
  eq(T.pack(r.filter, r, msg { src = "a", dst = "search" }), { false, "rate limit" })
  ok(send(r, "b"), "another sender has its own bucket")
  S.advance(99)
  ok(not send(r, "a"), "0.99 token after 99 ms")
  S.advance(1)
  ok(send(r, "a"), "one token after 100 ms at 10/s")
  ok(not send(r, "a"))
  S.advance(10000)
  for i = 1, 5 do ok(send(r, "a"), "refilled to burst " .. i) end
  ok(not send(r, "a"), "never above burst")
end)

test("refused messages do not take tokens; sustained rate holds", function()
  local S = T.sandbox()
  local r = T.wrap(S.require "smartshop.rules.rate_limit").new { rate = 20 }
  local passed = 0
  for _ = 1, 100 do          -- 10 attempts every 100 ms, for 9.9 s
    for _ = 1, 10 do if send(r, "x") then passed = passed + 1 end end
    S.advance(100)
  end
  eq(passed, 20 + 20 * 9.9, "burst + rate x elapsed (a refusal takes no token)")
end)

test("broker and answers are not counted; only_dst; types", function()
  local S = T.sandbox()
  local rl = T.wrap(S.require "smartshop.rules.rate_limit")
  local r = rl.new { rate = 1, burst = 1 }
  ok(send(r, "a"))
  ok(not send(r, "a"))
  ok(send(r, "a", "broker"), "requests to the broker are not counted")
  ok(send(r, "a", "search", "response"), "answers pass")
  local only = rl.new { rate = 1, burst = 1, only_dst = { "pay*" }, types = { "request", "event" } }
  ok(send(only, "a", "payments")); ok(not send(only, "a", "payments", "event"))
  ok(send(only, "a", "search")); ok(send(only, "a", "search"))
end)

test("memory is bounded: at most max_senders, the oldest forgotten", function()
  local S = T.sandbox()
  local r = T.wrap(S.require "smartshop.rules.rate_limit").new { rate = 1, burst = 1, max_senders = 100 }
  ok(send(r, "flood")); ok(not send(r, "flood"))
  for i = 1, 10000 do
    send(r, "s" .. i)
    if i % 20 == 0 then ok(not send(r, "flood"), "a sender that keeps sending stays tracked") end
    local _, n = r:peek("s" .. i)
    ok(n <= 100, "tracked " .. n)
  end
  local _, n = r:peek("s10000")
  ok(n <= 100 and n >= 50, "tracked " .. n)
  eq(r:peek("s1"), nil, "the oldest senders are forgotten")
  ok(send(r, "s1"), "and start again with a full bucket")
end)
