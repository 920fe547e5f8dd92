-- keeper, version 2: takes over version 1's state (on_reload).
local store, calls = {}, 0
local M = { name = "keeper" }

function M.on_reload(old)
  -- old: version 1's `state`, copied as JSON (arrays, 64-bit integers kept)
  if old then store, calls = old.store, old.calls end
  M.state = { store = store, calls = calls }
end

function M.on_save() return { store = store, calls = calls } end

function M.on_request(msg)
  calls = calls + 1
  local p = msg.payload
  if msg.action == "get" then return store[p.k] end
  if msg.action == "count" then return { version = 2, calls = calls } end
  return nil, "unknown action " .. tostring(msg.action), "unknown_action"
end

return M
