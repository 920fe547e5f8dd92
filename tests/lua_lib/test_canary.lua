local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options are checked at load", function()
  local canary = T.wrap(T.sandbox().require "smartshop.rules.canary")
  raises(function() canary.new { service = "a", canary = "a-c" } end, "option 'percent' is required")
  raises(function() canary.new { service = "a", canary = "a-c", percent = 101 } end, "within 0..100")
  raises(function() canary.new { service = "a", canary = "a", percent = 1 } end, "must differ")
  raises(function() canary.new { service = "a", canary = "b", percent = 1, sticky = "yes" } end,
         "option 'sticky' must be a boolean")
end)

local up = { checkout = { { id = "s" } }, ["checkout-canary"] = { { id = "c" } } }

test("counted: exactly percent in every 100, only requests, only while up", function()
  local canary = T.wrap(T.sandbox().require "smartshop.rules.canary")
  local r = canary.new { service = "checkout", canary = "checkout-canary", percent = 10, sticky = false }
  local ctx = T.ctx(up)
  local n = 0
  for i = 1, 200 do
    local to = r:route(msg { src = "ui", dst = "checkout" }, ctx)
    if to == "checkout-canary" then n = n + 1 else eq(to, nil) end
    if i % 10 == 0 then eq(n, i // 10, "evenly spread") end
  end
  eq(n, 20)
  eq(r:route(msg { type = "event", dst = "checkout" }, ctx), nil, "events are not split")
  eq(r:route(msg { dst = "cart" }, ctx), nil)
  local down = T.ctx { checkout = { { id = "s" } } }
  for _ = 1, 20 do eq(r:route(msg { dst = "checkout" }, down), nil) end
end)

test("sticky: a sender stays on one side; about percent of senders", function()
  local canary = T.wrap(T.sandbox().require "smartshop.rules.canary")
  local r = canary.new { service = "checkout", canary = "checkout-canary", percent = 20 }
  local ctx = T.ctx(up)
  local on_canary, side = 0, {}
  for i = 1, 2000 do
    local src = "client-" .. i
    side[src] = r:route(msg { src = src, dst = "checkout" }, ctx)
    if side[src] then on_canary = on_canary + 1 end
  end
  ok(on_canary > 300 and on_canary < 500, "senders on the canary: " .. on_canary)
  for i = 1, 2000, 7 do
    local src = "client-" .. i
    for _ = 1, 3 do eq(r:route(msg { src = src, dst = "checkout" }, ctx), side[src], src) end
  end
  -- raising percent moves senders to the canary only
  local r40 = canary.new { service = "checkout", canary = "checkout-canary", percent = 40 }
  local more = 0
  for i = 1, 2000 do
    local src = "client-" .. i
    local now = r40:route(msg { src = src, dst = "checkout" }, ctx)
    if side[src] then eq(now, "checkout-canary", src .. " moved back") end
    if now then more = more + 1 end
  end
  ok(more > on_canary, "40% holds more senders than 20%")
  eq(r:route(msg { src = "client-1", dst = "checkout" }, T.ctx { checkout = { { id = "s" } } }), nil,
     "without a canary instance, none")
end)

test("sticky cache stays bounded", function()
  local canary = T.wrap(T.sandbox().require "smartshop.rules.canary")
  local r = canary.new { service = "a", canary = "a-c", percent = 50, max_senders = 10 }
  local ctx = T.ctx { a = { { id = "1" } }, ["a-c"] = { { id = "2" } } }
  local first = r:route(msg { src = "s0", dst = "a" }, ctx)
  for i = 1, 1000 do r:route(msg { src = "s" .. i, dst = "a" }, ctx) end
  ok(r.points:count() <= 10)
  eq(r:route(msg { src = "s0", dst = "a" }, ctx), first, "the same side after being forgotten")
end)
