-- policies/examples/*.lua and policies/routing.lua loaded as the broker
-- would (a fresh state, require of smartshop.* only), driven through their
-- hooks the way tests/integration/test_policy_examples.py drives them
-- through the broker: the same inputs, the same decisions.
local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

local HOOKS = { "authorize", "filter", "route", "on_register", "on_unregister", "on_outcome" }

local function load(file, want_hooks)
  local S = T.sandbox()
  local env = S.load_policy(T.ROOT .. "/policies/" .. file)
  local defined = {}
  for _, h in ipairs(HOOKS) do if env[h] ~= nil then defined[#defined + 1] = h end end
  eq(table.concat(defined, " "), want_hooks, file .. " defines")
  return env, S
end

test("routing.lua as shipped defines no hook", function()
  load("routing.lua", "")
end)

test("deny_list.lua", function()
  local p = load("examples/deny_list.lua", "filter")
  eq(T.pack(p.filter, msg { src = "legacy-scraper", dst = "orders", action = "list" }),
     { false, "this client is retired: use catalog-api" })
  eq(T.pack(p.filter, msg { src = "shop-ui", dst = "orders", action = "drop_all_tables" }),
     { false, "not on this bus" })
  eq(T.pack(p.filter, msg { type = "event", src = "shop-ui", dst = "orders", action = "debug_dump" }),
     { false, "debug actions are off in production" })
  eq(T.pack(p.filter, msg { src = "shop-ui", dst = "orders", action = "list" }), {})
  eq(T.pack(p.filter, msg { type = "response", src = "legacy-scraper", dst = "orders" }), {})
end)

test("acl.lua", function()
  local p = load("examples/acl.lua", "authorize")
  eq(T.pack(p.authorize, msg { src = "shop-ui", dst = "ledger", action = "refund" }, {}),
     { false, "shop-ui may not call ledger refund" })
  eq(T.pack(p.authorize, msg { src = "payment-service", dst = "ledger", action = "refund" }, {}), {})
  eq(T.pack(p.authorize, msg { src = "warehouse", dst = "inventory", action = "restock" }, {}), {})
  eq(T.pack(p.authorize, msg { src = "x", dst = "orders", action = "any" }, {}), {})
end)

test("alias.lua", function()
  local p = load("examples/alias.lua", "route")
  local services = { inventory = { { id = "old" } } }
  local ctx = T.ctx(services)
  eq(T.pack(p.route, msg { dst = "inventory", action = "get" }, ctx), {})
  services["inventory-v2"] = { { id = "v2" } }
  eq(p.route(msg { dst = "inventory" }, ctx), "inventory-v2")
  eq(p.route(msg { type = "event", dst = "inventory", action = "restocked" }, ctx), "inventory-v2")
  eq(T.pack(p.route, msg { dst = "user-service" }, T.ctx {}), {}, "neither: no_such_service")
end)

test("canary.lua", function()
  local p = load("examples/canary.lua", "route")
  local function spread(ctx, n, dst)
    local counts = {}
    for i = 1, n do
      local to = p.route(msg { src = "shop-ui", dst = dst or "checkout", payload = { i = i } }, ctx) or (dst or "checkout")
      counts[to] = (counts[to] or 0) + 1
    end
    return counts
  end
  eq(spread(T.ctx { checkout = { { id = "s" } } }, 30), { checkout = 30 })
  local both = T.ctx { checkout = { { id = "s" } }, ["checkout-canary"] = { { id = "c" } }, cart = { { id = "k" } } }
  eq(spread(both, 200), { checkout = 180, ["checkout-canary"] = 20 })
  eq(spread(both, 20, "cart"), { cart = 20 })
  for _ = 1, 20 do eq(p.route(msg { type = "event", src = "shop-ui", dst = "checkout", action = "tick" }, both), nil) end
end)

test("affinity.lua", function()
  local p = load("examples/affinity.lua", "route")
  local function fnv(s)
    local h = 2166136261
    for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
    return h
  end
  local function expected(c, ids)
    local best, score
    for _, id in ipairs(ids) do
      local s = fnv(c .. "\0" .. id)
      if not best or s > score then best, score = id, s end
    end
    return best
  end
  local services = { cart = { { id = "cart-a" }, { id = "cart-b" }, { id = "cart-c" } } }
  local ctx = T.ctx(services)
  local before = {}
  for n = 0, 23 do
    local c = "c-" .. n
    local name, id = p.route(msg { dst = "cart", action = "add", payload = { cart_id = c, sku = 1 } }, ctx)
    eq(name, "cart")
    eq(id, expected(c, { "cart-a", "cart-b", "cart-c" }), c)
    before[c] = id
  end
  table.remove(services.cart)                    -- cart-c unregisters
  for c, was in pairs(before) do
    local _, id = p.route(msg { dst = "cart", action = "add", payload = { cart_id = c, sku = 1 } }, ctx)
    if was ~= "cart-c" then eq(id, was, c .. " moved") end
    eq(id, expected(c, { "cart-a", "cart-b" }))
  end
  eq(T.pack(p.route, msg { dst = "cart", action = "list", payload = { user = "u1" } }, ctx), {})
end)

test("rate_limit.lua", function()
  local p, S = load("examples/rate_limit.lua", "filter")
  local refused = 0
  for i = 1, 30 do
    local r, why = p.filter(msg { src = "burst-client", dst = "search", payload = { i = i } })
    if i <= 20 then eq(r, nil, "request " .. i) else eq({ r, why }, { false, "rate limit" }); refused = refused + 1 end
    S.advance(0)
  end
  eq(refused, 10)
  eq(p.filter(msg { src = "calm-client", dst = "search" }), nil)
  eq(p.filter(msg { src = "burst-client", dst = "broker", action = "ping" }), nil, "the broker's requests are not counted")
  S.advance(650)                                -- at least this much later, the test's next round trip
  eq(p.filter(msg { src = "burst-client", dst = "search" }), nil)
end)

test("least_loaded.lua", function()
  local p = load("examples/least_loaded.lua", "route")
  local services = { work = { { id = "work-a", load = 1 }, { id = "work-b", load = 0 } } }
  local ctx = T.ctx(services)
  for _ = 1, 5 do eq({ p.route(msg { dst = "work" }, ctx) }, { "work", "work-b" }) end
  services.work[1].load = 0
  local got = {}
  for _ = 1, 4 do
    local _, id = p.route(msg { dst = "work" }, ctx)
    got[id] = (got[id] or 0) + 1
  end
  eq(got, { ["work-a"] = 2, ["work-b"] = 2 }, "idle instances take turns")
end)
