-- affinity.lua: requests about the same cart go to the same instance of
-- the service (same payload.cart_id -> same instance), e.g. for a service
-- that keeps carts in memory.
--
-- Rendezvous hashing: each instance gets a score FNV-1a(key \0 instance id)
-- and the highest wins. The choice is stable while the set of instances
-- is; when an instance comes or goes, only the carts it wins or held move.
-- Give the service's sockets a fixed ZeroMQ identity so that an instance
-- that reconnects keeps its carts. Messages without the field go
-- round-robin. Options: docs/lua-library.md (smartshop.rules.affinity).

local policy = require "smartshop.policy"
local affinity = require "smartshop.rules.affinity"

policy.use {
  affinity.new { service = "cart", field = "cart_id" },
}
