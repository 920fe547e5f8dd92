local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options are checked at load", function()
  local affinity = T.wrap(T.sandbox().require "smartshop.rules.affinity")
  raises(function() affinity.new { service = "cart" } end, "option 'field' is required (string)")
  raises(function() affinity.new { service = 1, field = "x" } end, "option 'service' must be a string")
end)

-- FNV-1a written out here, as tests/integration/test_policy_examples.py does
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return h
end
local function expected(key, ids)
  local best, score
  for _, id in ipairs(ids) do
    local s = fnv(key .. "\0" .. id)
    if not best or s > score then best, score = id, s end
  end
  return best
end

local function instances(ids)
  local l = {}
  for i, id in ipairs(ids) do l[i] = { id = id } end
  return l
end

local function owners(r, ctx, n)
  local got = {}
  for i = 1, n do
    local name, id = r:route(msg { dst = "cart", payload = { cart_id = "c-" .. i } }, ctx)
    eq(name, "cart")
    got["c-" .. i] = id
  end
  return got
end

test("the highest rendezvous score wins, the same key the same instance", function()
  local affinity = T.wrap(T.sandbox().require "smartshop.rules.affinity")
  local r = affinity.new { service = "cart", field = "cart_id" }
  local ids = { "cart-a", "cart-b", "cart-c" }
  local ctx = T.ctx { cart = instances(ids) }
  local first = owners(r, ctx, 60)
  local used = {}
  for k, id in pairs(first) do
    eq(id, expected(k, ids), k)
    used[id] = true
  end
  ok(used["cart-a"] and used["cart-b"] and used["cart-c"], "keys spread over all instances")
  eq(owners(r, ctx, 60), first)
end)

test("when an instance leaves only its keys move; when it comes back they return", function()
  local affinity = T.wrap(T.sandbox().require "smartshop.rules.affinity")
  local r = affinity.new { service = "cart", field = "cart_id" }
  local services = { cart = instances { "i1", "i2", "i3", "i4", "i5" } }
  local ctx = T.ctx(services)
  local before = owners(r, ctx, 500)
  services.cart = instances { "i1", "i2", "i4", "i5" }      -- i3 leaves
  local after = owners(r, ctx, 500)
  local moved = 0
  for k, id in pairs(before) do
    if id == "i3" then
      ok(after[k] ~= "i3")
      moved = moved + 1
    else
      eq(after[k], id, k .. " moved though its instance stayed")
    end
  end
  ok(moved > 50, "i3 held " .. moved .. " of 500 keys")
  services.cart = instances { "i1", "i2", "i3", "i4", "i5" }
  eq(owners(r, ctx, 500), before, "i3 back: its keys come back, no other moves")
  -- a newcomer takes only keys from the others, never shuffles them
  services.cart = instances { "i1", "i2", "i3", "i4", "i5", "i6" }
  for k, id in pairs(owners(r, ctx, 500)) do
    ok(id == before[k] or id == "i6", k)
  end
end)

test("numbers are keys without .0; no field, null or a table: round-robin", function()
  local S = T.sandbox()
  local affinity = T.wrap(S.require "smartshop.rules.affinity")
  local r = affinity.new { service = "cart", field = "cart_id" }
  local ids = { "a", "b", "c" }
  local ctx = T.ctx { cart = instances(ids) }
  local _, id = r:route(msg { dst = "cart", payload = { cart_id = 42 } }, ctx)
  eq(id, expected("42", ids))
  for _, p in ipairs { { user = "u" }, { cart_id = S.env.json.null }, { cart_id = { 1 } } } do
    eq(T.pack(r.route, r, msg { dst = "cart", payload = p }, ctx), {})
  end
  eq(T.pack(r.route, r, msg { dst = "cart" }, ctx), {}, "no payload")
  eq(T.pack(r.route, r, msg { dst = "other", payload = { cart_id = "x" } }, ctx), {})
  eq(ctx.calls, 1, "instances() only for keyed messages")
  eq(T.pack(r.route, r, msg { dst = "cart", payload = { cart_id = "x" } }, T.ctx {}), {},
     "no instance: the broker answers")
end)
