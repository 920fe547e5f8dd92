-- policies/routing.lua: the bus's routing policy.
--
-- The broker reloads this file within a second of your saving it, with no
-- restart and no dropped connection (also on SIGHUP, or
-- `smartshop-ctl reload`). A version with an error is refused and the
-- previous one keeps running; the broker's log says file, line and error.
--
-- A policy is a list of rules from the broker's library (lua/smartshop/,
-- docs/lua-library.md), each a few lines of options; policy.use defines
-- the hooks (docs/policies.md) that the rules need, and no other.
--
-- As shipped, the list is empty: every message goes to its dst,
-- round-robin across the instances of a service, and any well-formed name
-- may register. No hook is defined, so a message costs nothing here.
-- Uncomment and edit the rules you need; policies/examples/ has one ready
-- file per rule and one (composed.lua) that combines five.

local policy = require "smartshop.policy"
local deny = require "smartshop.rules.deny"
local alias = require "smartshop.rules.alias"
local rate_limit = require "smartshop.rules.rate_limit"
local schema = require "smartshop.rules.schema"
local breaker = require "smartshop.rules.breaker"

policy.use {
  -- Refuse senders, destinations or actions (names, "prefix*" or "*"):
  -- deny.new { action = { drop_all_tables = "not on this bus" }, src = { "test-*" } },

  -- At most a burst of 50, then 20 requests a second per sender:
  -- rate_limit.new { rate = 20, burst = 50 },

  -- Check a payload before it reaches the service (refused: bad_payload):
  -- schema.new { service = "orders", actions = {
  --   create = { sku = { type = "string", required = true }, qty = { type = "integer", min = 1 } } } },

  -- An old name served by its new one once that is up:
  -- alias.new { aliases = { inventory = "inventory-v2" } },

  -- Stop sending to a failing service for a while (fail fast: unavailable):
  -- breaker.new { service = "payments", failures = 5, window_ms = 10000, open_ms = 5000 },

  -- A rule of your own: a table with any of the hook methods.
  -- { on_register = function(self, name, peer)
  --     if name:find("^test%-") then return false, "test services stay off this bus" end
  --   end },
}
