local test, eq, raises, msg = T.test, T.eq, T.raises, T.msg

test("options are checked at load", function()
  local alias = T.wrap(T.sandbox().require "smartshop.rules.alias")
  raises(function() alias.new {} end, "option 'aliases' is required")
  raises(function() alias.new { aliases = {} } end, "option 'aliases' is empty")
  raises(function() alias.new { aliases = { "x" } } end, "each entry is old name = \"new name\"")
  raises(function() alias.new { aliases = { a = "a" } } end, "a is an alias of itself")
  raises(function() alias.new { aliases = { a = "b" }, always = 1 } end, "option 'always' must be a boolean")
end)

test("the new name once it is up; the old one until then", function()
  local alias = T.wrap(T.sandbox().require "smartshop.rules.alias")
  local r = alias.new { aliases = { inventory = "inventory-v2" } }
  local services = { inventory = { { id = "old" } } }
  local ctx = T.ctx(services)
  eq(T.pack(r.route, r, msg { dst = "inventory" }, ctx), {})
  services["inventory-v2"] = { { id = "new" } }
  eq(T.pack(r.route, r, msg { dst = "inventory" }, ctx), { "inventory-v2" })
  eq(T.pack(r.route, r, msg { type = "event", dst = "inventory" }, ctx), { "inventory-v2" })
  eq(T.pack(r.route, r, msg { dst = "orders" }, ctx), {})
  local always = alias.new { aliases = { a = "b" }, always = true }
  eq(always:route(msg { dst = "a" }, T.ctx {}), "b")
end)
