-- keeper, version "save": takes over version 1's state, and its on_save
-- hands over what the last `poison` request asked for (tests/integration/
-- test_lua_data.py, ReloadRefusedOnSave):
--   poison {how = "function"}  a state holding a function (not JSON)
--   poison {how = "cycle"}     a state that contains itself
--   poison {how = "deep"}      a state nested 100 deep
--   poison {how = "raise"}     on_save raises
--   poison {how = "none"}      the state as it is
--   count -> {version = "save", calls}
local store, calls, how = {}, 0, "none"
local M = { name = "keeper" }

function M.on_reload(old)
  if old then store, calls = old.store, old.calls end
end

function M.on_save()
  local state = { store = store, calls = calls }
  if how == "function" then state.f = print
  elseif how == "cycle" then state.self = state
  elseif how == "deep" then
    local t = state
    for _ = 1, 100 do t.next = {} t = t.next end
  elseif how == "raise" then error("on_save broken on purpose")
  end
  return state
end

function M.on_request(msg)
  calls = calls + 1
  local p = msg.payload or {}
  if msg.action == "poison" then how = p.how return { how = how } end
  if msg.action == "get" then return store[p.k] end
  if msg.action == "count" then return { version = "save", calls = calls } end
  return nil, "unknown action " .. tostring(msg.action), "unknown_action"
end

return M
