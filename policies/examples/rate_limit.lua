-- rate_limit.lua: each sender (src) may send a burst of 20 requests, then
-- 20 a second (a token bucket); the rest get `denied` with the reason
-- "rate limit".
--
-- Use it to keep one runaway client from starving the others. Requests to
-- the broker's own service (ping, stats...) are not counted. The buckets
-- live in this Lua state: saving the file (a reload) starts them again
-- full. At most 10000 senders are tracked (max_senders).
-- Options: docs/lua-library.md (smartshop.rules.rate_limit).

local policy = require "smartshop.policy"
local rate_limit = require "smartshop.rules.rate_limit"

policy.use {
  rate_limit.new { rate = 20, burst = 20 },
}
