-- deny_list.lua: refuse requests and events from some senders, or for some
-- actions. The sender gets an error with code `denied` and the reason
-- written here; nothing is delivered.
--
-- Use it to cut off a misbehaving client at once, or to keep a dangerous
-- action off the bus until its service is fixed. Edit a list, save: the
-- broker reloads the file within a second. Answers (response, error)
-- always pass: refusing one would only leave its requester waiting.
-- Options: docs/lua-library.md (smartshop.rules.deny).

local policy = require "smartshop.policy"
local deny = require "smartshop.rules.deny"

policy.use {
  deny.new {
    src = { ["legacy-scraper"] = "this client is retired: use catalog-api" },
    action = {
      drop_all_tables = "not on this bus",
      debug_dump = "debug actions are off in production",
    },
  },
}
