-- acl.lua: who may call what, by the sender's name (and, optionally, key).
--
-- The broker has already checked that msg.src is a name the sending
-- connection registered (or one nobody holds), so a rule on msg.src is a
-- rule on who really sent it. With CURVE on, `keys` pins the key a sender
-- must have authenticated with. Services not listed are open to everyone;
-- a listed service is closed except for what its entries allow.
-- Options: docs/lua-library.md (smartshop.rules.acl).

local policy = require "smartshop.policy"
local acl = require "smartshop.rules.acl"

policy.use {
  acl.new {
    services = {
      -- service = { action = { senders allowed }, ["*"] = for any other action }
      ledger    = { refund = { "payment-service" }, ["*"] = { "*" } },
      inventory = { restock = { "warehouse", "admin-tool" }, stock = { "*" } },
    },
    -- sender name -> the CURVE public key it must have (only with CURVE)
    keys = {
      -- ["payment-service"] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    },
  },
}
