-- composed.lua: five rules in one policy, each a few lines of options.
--
-- In the order they are asked:
--   1. deny:       a retired client and a dangerous action are refused;
--   2. rate_limit: each sender gets a burst of 50, then 20 requests a second;
--   3. schema:     orders create must carry a valid sku and qty
--                  (else bad_payload, naming the field);
--   4. canary:     10% of checkout's senders (sticky) go to checkout-canary
--                  while it is up;
--   5. breaker:    payments opens after 5 failures in 10 s and, for 5 s,
--                  requests go to the Lua service payments-fallback.
-- filter runs 1-3 (the first refusal wins), route runs 4 and 5 (the first
-- route wins), on_outcome feeds 5. No authorize, on_register or
-- on_unregister is defined, so the broker skips them.
-- Options: docs/lua-library.md.

local policy     = require "smartshop.policy"
local deny       = require "smartshop.rules.deny"
local rate_limit = require "smartshop.rules.rate_limit"
local schema     = require "smartshop.rules.schema"
local canary     = require "smartshop.rules.canary"
local breaker    = require "smartshop.rules.breaker"

policy.use {
  deny.new {
    src = { ["legacy-scraper"] = "this client is retired: use catalog-api" },
    action = { drop_all_tables = "not on this bus" },
  },
  rate_limit.new { rate = 20, burst = 50 },
  schema.new {
    service = "orders",
    actions = {
      create = {
        sku = { type = "string", required = true, max_len = 32 },
        qty = { type = "integer", required = true, min = 1, max = 1000 },
      },
    },
  },
  canary.new { service = "checkout", canary = "checkout-canary", percent = 10 },
  breaker.new { service = "payments", failures = 5, window_ms = 10000, open_ms = 5000,
                fallback = "payments-fallback" },
}
