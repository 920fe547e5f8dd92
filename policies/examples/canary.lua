-- canary.lua: a share of a service's requests goes to its canary, e.g.
-- 10% of "checkout" to "checkout-canary", while the canary is up.
--
-- sticky = false: the split is counted, not drawn at random: with
-- percent = 10, exactly one request in every ten goes to the canary,
-- evenly spread, so the canary's share in `stats` is what you configured.
-- (sticky = true, the default, keeps each sender on one side instead.)
-- Start the canary, raise the percent step by step (save the file each
-- time), then rename it or stop the old version. Events are not split.
-- Options: docs/lua-library.md (smartshop.rules.canary).

local policy = require "smartshop.policy"
local canary = require "smartshop.rules.canary"

policy.use {
  canary.new { service = "checkout", canary = "checkout-canary", percent = 10, sticky = false },
}
