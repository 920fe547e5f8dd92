local test, eq, raises, msg = T.test, T.eq, T.raises, T.msg

test("options are checked at load", function()
  local acl = T.wrap(T.sandbox().require "smartshop.rules.acl")
  raises(function() acl.new {} end, "give at least one of the options services, keys")
  raises(function() acl.new { services = { ledger = "x" } } end, "each entry is service name")
  raises(function() acl.new { services = { ledger = { refund = "a" } } } end, "services.ledger.refund' must be a list")
  raises(function() acl.new { keys = { a = 1 } } end, "option 'keys'")
  raises(function() acl.new { rules = {} } end, "unknown option 'rules'")
end)

local function example(acl)
  return acl.new {
    services = {
      ledger = { refund = { "payment-service" }, ["*"] = { "*" } },
      inventory = { restock = { "warehouse", "admin-*" }, stock = { "*" } },
    },
    keys = { ["payment-service"] = "KEY-P" },
  }
end

test("listed services are closed except for what they allow", function()
  local acl = T.wrap(T.sandbox().require "smartshop.rules.acl")
  local r = example(acl)
  local function ask(src, dst, action, key)
    return T.pack(r.authorize, r, msg { src = src, dst = dst, action = action }, { key = key })
  end
  eq(ask("payment-service", "ledger", "refund", "KEY-P"), {})
  eq(ask("shop-ui", "ledger", "refund"), { false, "shop-ui may not call ledger refund" })
  eq(ask("shop-ui", "ledger", "balance"), {}, "* action")
  eq(ask("admin-tool", "inventory", "restock"), {}, "prefix sender")
  eq(ask("shop-ui", "inventory", "restock"), { false, "shop-ui may not call inventory restock" })
  eq(ask("shop-ui", "inventory", "delete"), { false, "shop-ui may not call inventory delete" },
     "an action with no entry and no * entry: nobody")
  eq(ask("shop-ui", "orders", "anything"), {}, "unlisted services are open")
  eq(ask("shop-ui", "inventory", nil), { false, "shop-ui may not call inventory nil" })
end)

test("a pinned sender must come with its key", function()
  local acl = T.wrap(T.sandbox().require "smartshop.rules.acl")
  local r = example(acl)
  local m = msg { src = "payment-service", dst = "orders", action = "x" }
  eq(T.pack(r.authorize, r, m, { key = "OTHER" }), { false, "payment-service must connect with its own key" })
  eq(T.pack(r.authorize, r, m, {}), { false, "payment-service must connect with its own key" }, "plain mode")
  eq(T.pack(r.authorize, r, m, { key = "KEY-P" }), {})
  eq(T.pack(r.authorize, r, msg { type = "event", src = "payment-service", dst = "ledger" }, {}), {},
     "only requests are checked by default")
end)
