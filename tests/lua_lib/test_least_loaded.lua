local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

test("options are checked at load", function()
  local ll = T.wrap(T.sandbox().require "smartshop.rules.least_loaded")
  raises(function() ll.new { services = "work" } end, "option 'services' must be a table")
  raises(function() ll.new { service = {} } end, "unknown option 'service'")
  ll.new()
  ll.new {}
end)

test("the fewest in flight wins; ties take turns", function()
  local ll = T.wrap(T.sandbox().require "smartshop.rules.least_loaded")
  local r = ll.new {}
  local services = { work = { { id = "a", load = 3 }, { id = "b", load = 1 }, { id = "c", load = 1 } } }
  local ctx = T.ctx(services)
  local got = {}
  for _ = 1, 6 do
    local name, id = r:route(msg { dst = "work" }, ctx)
    eq(name, "work")
    got[id] = (got[id] or 0) + 1
  end
  eq(got, { b = 3, c = 3 })
  services.work[1].load = 0
  for _ = 1, 3 do eq(select(2, r:route(msg { dst = "work" }, ctx)), "a") end
  eq(T.pack(r.route, r, msg { type = "event", dst = "work" }, ctx), {}, "events round-robin")
  eq(T.pack(r.route, r, msg { dst = "none" }, ctx), {}, "no instance")
end)

test("services option limits it", function()
  local ll = T.wrap(T.sandbox().require "smartshop.rules.least_loaded")
  local r = ll.new { services = { "work-*" } }
  local ctx = T.ctx { ["work-1"] = { { id = "x", load = 0 } }, other = { { id = "y", load = 0 } } }
  eq(T.pack(r.route, r, msg { dst = "work-1" }, ctx), { "work-1", "x" })
  eq(T.pack(r.route, r, msg { dst = "other" }, ctx), {})
end)
