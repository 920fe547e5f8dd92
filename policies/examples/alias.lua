-- alias.lua: requests and events for an old service name go to its new
-- name, so that clients can move at their own pace.
--
-- The message is forwarded as the very bytes the client sent: its dst is
-- still the old name, so the new service must not insist on its own name
-- in dst. Answers need no rule (they follow correlation_id). While the new
-- name has no live instance, the old name is served as before (or
-- answered no_such_service if nobody holds it either).
-- Options: docs/lua-library.md (smartshop.rules.alias).

local policy = require "smartshop.policy"
local alias = require "smartshop.rules.alias"

policy.use {
  alias.new {
    aliases = {               -- old name -> new name
      ["inventory"] = "inventory-v2",
      ["user-service"] = "accounts",
    },
  },
}
