-- bench/policies/composed.lua: hooks.lua's work as three rules of the
-- library (lua/smartshop/rules), composed by smartshop.policy.
--
-- The same decisions as the hand-written hooks.lua (refuse two actions and
-- the quarantine destination for requests and events, alias inventory),
-- plus a deny list by sender, so that the composed hooks read src, dst and
-- action. The benchmark's requests pass all three; what this measures is
-- what composition costs over writing the hooks by hand.
local policy = require "smartshop.policy"
local deny = require "smartshop.rules.deny"
local alias = require "smartshop.rules.alias"

policy.use {
  deny.new {
    src = { ["legacy-scraper"] = "this client is retired" },
    action = {
      drop_all_tables = "not on this bus",
      debug_dump = "debug actions are off in production",
    },
  },
  deny.new { dst = { quarantine = "quarantined" } },
  alias.new { aliases = { inventory = "inventory-v2" } },
}
