-- Rules together: policies/examples/composed.lua (deny, rate_limit,
-- schema, canary, breaker) and a composition built here, driven through
-- the hooks policy.use defined.
local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("composed.lua: five rules, only filter, route and on_outcome defined", function()
  local S = T.sandbox()
  local p = S.load_policy(T.ROOT .. "/policies/examples/composed.lua")
  for _, h in ipairs { "authorize", "on_register", "on_unregister" } do eq(p[h], nil, h) end
  ok(p.filter and p.route and p.on_outcome)
  local ctx = T.ctx { orders = { { id = "o" } }, checkout = { { id = "s" } },
                      ["checkout-canary"] = { { id = "c" } }, payments = { { id = "p" } },
                      ["payments-fallback"] = { { id = "lua" } } }
  -- 1. deny comes first, even for a sender over its rate
  eq(T.pack(p.filter, msg { src = "legacy-scraper", dst = "orders", action = "list" }),
     { false, "this client is retired: use catalog-api" })
  -- 3. schema
  eq(T.pack(p.filter, msg { src = "ui", dst = "orders", action = "create", payload = { sku = "a", qty = 0 } }),
     { false, "orders create: field 'qty' must be at least 1", "bad_payload" })
  eq(T.pack(p.filter, msg { src = "ui", dst = "orders", action = "create", payload = { sku = "a", qty = 2 } }), {})
  -- 2. rate limit: ui has used 2 of its 50; the schema is not asked once the rate refuses
  for _ = 1, 48 do eq(p.filter(msg { src = "ui", dst = "orders", action = "list" }), nil) end
  eq(T.pack(p.filter, msg { src = "ui", dst = "orders", action = "create", payload = {} }),
     { false, "rate limit" })
  eq(p.filter(msg { src = "other", dst = "orders", action = "list" }), nil)
  -- 4. canary: about 10% of senders, each always on one side
  local on = 0
  for i = 1, 1000 do
    local src = "client-" .. i
    local to = p.route(msg { src = src, dst = "checkout" }, ctx)
    if to == "checkout-canary" then on = on + 1 else eq(to, nil) end
    eq(p.route(msg { src = src, dst = "checkout" }, ctx), to, "sticky")
  end
  ok(on > 60 and on < 140, "senders on the canary: " .. on)
  -- 5. breaker: 5 timeouts open it; payments go to the fallback; a probe closes it
  eq(p.route(msg { src = "ui", dst = "payments" }, ctx), nil)
  for _ = 1, 5 do p.on_outcome { service = "payments", outcome = "timeout", latency_ms = 3000 } end
  eq(p.route(msg { src = "ui", dst = "payments" }, ctx), "payments-fallback")
  ok(S.log_has("breaker payments: open"))
  S.advance(5000)
  eq(p.route(msg { src = "ui", dst = "payments" }, ctx), nil, "probe")
  p.on_outcome { service = "payments", outcome = "ok", latency_ms = 4 }
  eq(p.route(msg { src = "ui", dst = "payments" }, ctx), nil, "closed")
end)

test("four rules built here: deny, rate_limit, schema, alias; a rewrite in the chain", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local deny = S.require "smartshop.rules.deny"
  local rate_limit = S.require "smartshop.rules.rate_limit"
  local schema = S.require "smartshop.rules.schema"
  local alias = S.require "smartshop.rules.alias"
  local tag = { filter = function(_, m)
    if m.action == "legacy_create" then
      local t = policy.table(m)
      t.action = "create"
      return t
    end
  end }
  policy.use {
    tag,
    deny.new { dst = { "quarantine" }, reason = "quarantined" },
    schema.new { service = "orders", actions = { create = { sku = { type = "string", required = true } } } },
    rate_limit.new { rate = 1, burst = 2 },
    alias.new { aliases = { inventory = "inventory-v2" } },
  }
  local p = S.env
  eq(p.authorize, nil)
  -- the rewrite is what schema sees: legacy_create is checked as create
  eq(T.pack(p.filter, msg { src = "a", dst = "orders", action = "legacy_create", payload = {} }),
     { false, "orders create: field 'sku' is required", "bad_payload" })
  local out = p.filter(msg { src = "a", dst = "orders", action = "legacy_create", payload = { sku = "x" } })
  eq({ out.action, out.payload.sku, out.src }, { "create", "x", "a" }, "the last rewrite is the answer")
  -- the refusal by schema took no token (rate_limit was not asked): 1 used, 1 left
  eq(p.filter(msg { src = "a", dst = "orders", action = "list" }), nil)
  eq(T.pack(p.filter, msg { src = "a", dst = "orders", action = "list" }), { false, "rate limit" })
  eq(T.pack(p.filter, msg { src = "b", dst = "quarantine" }), { false, "quarantined" })
  eq(p.route(msg { dst = "inventory" }, T.ctx { ["inventory-v2"] = { { id = "v2" } } }), "inventory-v2")
end)
