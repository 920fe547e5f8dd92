-- deny_list.lua: refuse requests and events from some senders, or for some
-- actions. The sender gets an error with code `denied` and the reason
-- written here; nothing is delivered.
--
-- Use it to cut off a misbehaving client at once, or to keep a dangerous
-- action off the bus until its service is fixed. Edit a list, save: the
-- broker reloads the file within a second.
--
-- Answers (response, error) always pass: refusing one would only leave its
-- requester waiting for a timeout.

-- src -> reason
local DENIED_SRC = {
  ["legacy-scraper"] = "this client is retired: use catalog-api",
}

-- action -> reason
local DENIED_ACTION = {
  ["drop_all_tables"] = "not on this bus",
  ["debug_dump"] = "debug actions are off in production",
}

function filter(msg)
  if msg.type ~= "request" and msg.type ~= "event" then
    return
  end
  local why = DENIED_SRC[msg.src] or DENIED_ACTION[msg.action]
  if why then
    return false, why
  end
end
