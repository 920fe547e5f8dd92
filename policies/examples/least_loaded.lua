-- least_loaded.lua: each request goes to the instance of its service with
-- the fewest requests in flight (handed to it and not yet answered);
-- instances tied for the fewest take turns.
--
-- Use it when requests differ a lot in cost, so that a slow instance is
-- not handed as many as a fast one (plain round-robin does that). Events
-- are not counted as load and go round-robin.
-- Options: docs/lua-library.md (smartshop.rules.least_loaded).

local policy = require "smartshop.policy"
local least_loaded = require "smartshop.rules.least_loaded"

policy.use {
  least_loaded.new {},        -- every service; or { services = { "work", "report-*" } }
}
