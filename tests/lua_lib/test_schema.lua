local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options and field specs are checked at load", function()
  local schema = T.wrap(T.sandbox().require "smartshop.rules.schema")
  raises(function() schema.new { service = "orders" } end, "option 'actions' is required")
  raises(function() schema.new { service = "orders", actions = {} } end, "option 'actions' is empty")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "str" } } } } end,
         "actions.a.x: type must be string, number, integer, boolean or table, got str")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "string", maxlen = 3 } } } } end,
         "actions.a.x: unknown key 'maxlen'")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "string", min = 3 } } } } end,
         "actions.a.x: min is a number, for number and integer fields")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "integer", max_len = 3 } } } } end,
         "actions.a.x: max_len is a whole number >= 0, for string fields")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "string", enum = {} } } } } end,
         "actions.a.x: enum is a non-empty list")
  raises(function() schema.new { service = "o", actions = { a = { x = { type = "string", required = 1 } } } } end,
         "actions.a.x: required must be true or false")
end)

local function orders(schema, extra)
  return schema.new {
    service = "orders", extra = extra,
    actions = {
      create = {
        sku = { type = "string", required = true, min_len = 2, max_len = 8 },
        qty = { type = "integer", required = true, min = 1, max = 100 },
        price = { type = "number", min = 0 },
        priority = { type = "string", enum = { "low", "high" } },
        gift = { type = "boolean" },
        lines = { type = "table" },
      },
    },
  }
end

local function check(r, payload, action)
  return T.pack(r.filter, r, msg { dst = "orders", action = action or "create", payload = payload })
end

local function refused(r, payload, text)
  eq(check(r, payload), { false, "orders create: " .. text, "bad_payload" })
end

test("a good payload passes; each kind of fault names the field", function()
  local S = T.sandbox()
  local r = orders(T.wrap(S.require "smartshop.rules.schema"))
  eq(check(r, { sku = "ab", qty = 3, price = 2.5, priority = "low", gift = true, lines = { 1 }, more = 1 }), {})
  refused(r, { qty = 3 }, "field 'sku' is required")
  refused(r, { sku = S.env.json.null, qty = 3 }, "field 'sku' is required")
  refused(r, { sku = 5, qty = 3 }, "field 'sku' must be a string")
  refused(r, { sku = "a", qty = 3 }, "field 'sku' must be at least 2 characters")
  refused(r, { sku = "abcdefghi", qty = 3 }, "field 'sku' must be at most 8 characters")
  eq(check(r, { sku = "ééééé", qty = 3 }), {}, "length in characters, not bytes")
  refused(r, { sku = "ab", qty = 2.5 }, "field 'qty' must be an integer")
  refused(r, { sku = "ab", qty = "3" }, "field 'qty' must be an integer")
  refused(r, { sku = "ab", qty = 0 }, "field 'qty' must be at least 1")
  refused(r, { sku = "ab", qty = 101 }, "field 'qty' must be at most 100")
  refused(r, { sku = "ab", qty = 1, price = -1 }, "field 'price' must be at least 0")
  refused(r, { sku = "ab", qty = 1, priority = "mid" }, "field 'priority' must be one of low, high")
  refused(r, { sku = "ab", qty = 1, gift = "yes" }, "field 'gift' must be a boolean")
  refused(r, { sku = "ab", qty = 1, lines = "x" }, "field 'lines' must be an object or array")
  eq(check(r, nil), { false, "orders create: payload must be an object", "bad_payload" })
end)

test("other actions, services and answers pass unchecked; extra = false", function()
  local schema = T.wrap(T.sandbox().require "smartshop.rules.schema")
  local r = orders(schema)
  eq(check(r, { anything = 1 }, "list"), {})
  eq(T.pack(r.filter, r, msg { dst = "cart", action = "create", payload = {} }), {})
  eq(T.pack(r.filter, r, msg { type = "response", dst = "orders", action = "create", payload = {} }), {})
  local strict = orders(schema, false)
  eq(T.pack(strict.filter, strict, msg { dst = "orders", action = "create", payload = { sku = "ab", qty = 1, more = 1 } }),
     { false, "orders create: field 'more' is not allowed", "bad_payload" })
end)
