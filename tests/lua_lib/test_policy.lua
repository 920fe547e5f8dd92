-- smartshop.policy: which hooks are defined, and how rules' answers combine.
local test, eq, ok, raises, msg = T.test, T.eq, T.ok, T.raises, T.msg

local function rule(t) return t end

test("only the hooks some rule has are defined", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local hooks = policy.use({ rule { filter = function() end }, rule { on_outcome = function() end } })
  eq(type(S.env.filter), "function")
  eq(type(S.env.on_outcome), "function")
  for _, h in ipairs { "authorize", "route", "on_register", "on_unregister" } do
    eq(S.env[h], nil, h .. " must stay undefined")
  end
  eq(hooks.filter, S.env.filter)
end)

test("an empty list defines no hook", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  policy.use {}
  for _, h in ipairs(policy.HOOKS) do eq(S.env[h], nil, h) end
end)

test("bad rules are refused at load with a clear error", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  raises(function() policy.use "deny" end, "takes a list of rules")
  raises(function() policy.use { 42 } end, "rule 1 is a number")
  raises(function() policy.use { {} } end, "rule 1 has none of the hooks")
  raises(function() policy.use { { filter = function() end }, { route = "x" } } end,
         "rule 2's route is not a function")
  raises(function() policy.use { x = { filter = function() end } } end, "rules must be a list")
  S.env.route = function() end
  raises(function() policy.use { { route = function() end } } end, "route is already defined")
end)

test("filter: in order, first refusal wins, with its code", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local seen = {}
  local h = policy.hooks {
    { filter = function(_, m) seen[#seen + 1] = "a"; if m.action == "x" then return false, "no x" end end },
    { filter = function(_, m) seen[#seen + 1] = "b"; if m.action ~= "ok" then return false, "bad", "bad_payload" end end },
    { filter = function() seen[#seen + 1] = "c" end },
  }
  eq(T.pack(h.filter, msg { action = "x" }), { false, "no x" })
  eq(seen, { "a" }, "later rules are not asked")
  seen = {}
  eq(T.pack(h.filter, msg { action = "y" }), { false, "bad", "bad_payload" })
  seen = {}
  eq(T.pack(h.filter, msg { action = "ok" }), {})
  eq(seen, { "a", "b", "c" })
end)

test("filter: a rewrite is what later rules see, and the answer", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local seen_by_second
  local h = policy.hooks {
    { filter = function(_, m) local t = policy.table(m); t.payload.tag = "one"; return t end },
    { filter = function(_, m) seen_by_second = m.payload.tag; return true end },
    { filter = function(_, m) local t = policy.table(m); t.action = "renamed"; return t end },
  }
  local out = h.filter(msg { action = "a", payload = { n = 1 } })
  eq(seen_by_second, "one")
  eq(out.action, "renamed")
  eq(out.payload.tag, "one")
  -- true and nothing both mean: pass unchanged
  local h1 = policy.hooks { { filter = function() return true end } }
  local r = h1.filter(msg {})
  T.ok(r == nil or r == true, "passes")
end)

test("authorize and on_register: first refusal wins", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local asked = 0
  local h = policy.hooks {
    { authorize = function(_, m, peer) asked = asked + 1; if peer.key == nil then return false, "key" end end,
      on_register = function(_, name) asked = asked + 1; if name == "x" then return false, "no" end end },
    { authorize = function() asked = asked + 1; return false, "second", "unavailable" end,
      on_register = function() asked = asked + 1 end },
  }
  eq(T.pack(h.authorize, msg {}, {}), { false, "key" })
  eq(asked, 1)
  eq(T.pack(h.authorize, msg {}, { key = "k" }), { false, "second", "unavailable" })
  asked = 0
  eq(T.pack(h.on_register, "x", {}), { false, "no" })
  eq(asked, 1)
  eq(T.pack(h.on_register, "y", {}), {})
  eq(asked, 3)
end)

test("route: the first rule that gives a route wins, instance included", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local h = policy.hooks {
    { route = function(_, m) if m.dst == "a" then return "a2" end end },
    { route = function(_, m, ctx) if m.dst ~= "z" then return m.dst, ctx.instances(m.dst)[1].id end end },
    { route = function() error("never reached") end },
  }
  local ctx = T.ctx { a = { { id = "a-1" } }, b = { { id = "b-1" } } }
  eq(T.pack(h.route, msg { dst = "a" }, ctx), { "a2" })
  eq(T.pack(h.route, msg { dst = "b" }, ctx), { "b", "b-1" })
  raises(function() h.route(msg { dst = "z" }, ctx) end, "never reached")
end)

test("on_unregister and on_outcome: every rule is told", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local got = {}
  local function r(tag)
    return {
      on_unregister = function(self, name) got[#got + 1] = tag .. ":" .. name end,
      on_outcome = function(self, o) got[#got + 1] = tag .. ":" .. o.outcome; return false end,
    }
  end
  local h = policy.hooks { r "a", r "b" }
  h.on_unregister("svc", {})
  h.on_outcome { service = "svc", outcome = "ok" }
  eq(got, { "a:svc", "b:svc", "a:ok", "b:ok" })
end)

test("methods are called with the rule as self", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local r = { name = "me" }
  function r:route() return self.name end
  eq(policy.hooks({ r }).route(msg {}, T.ctx {}), "me")
end)

test("a hook whose rules all declare types is a table of functions by type", function()
  local S = T.sandbox()
  local policy = S.require "smartshop.policy"
  local seen = {}
  policy.use {
    rule { types = { request = true }, filter = function(_, m) seen[#seen + 1] = "a " .. m.type end },
    rule { types = { event = true, request = true },
           filter = function(_, m) seen[#seen + 1] = "b " .. m.type end },
    rule { route = function() return "r" end },          -- no types: every type
    rule { types = { response = true }, authorize = function() return false, "no" end },
  }
  local f = S.env.filter
  eq(type(f), "table")
  local keys = {}
  for k, v in pairs(f) do keys[#keys + 1] = k; eq(type(v), "function", k) end
  table.sort(keys)
  eq(keys, { "event", "request" }, "only the types some rule looks at")
  f.request(msg { type = "request" })
  f.event(msg { type = "event" })
  eq(seen, { "a request", "b request", "b event" })
  f(msg { type = "response" })                           -- callable: nothing for answers
  f(msg { type = "request" })
  eq(#seen, 5)
  eq(type(S.env.route), "function")
  eq(type(S.env.authorize), "table")
  eq(select(2, S.env.authorize.response(msg { type = "response" }, {})), "no")
  eq(S.env.authorize.request, nil)
end)
