-- Test fixture: a Lua instance of "shared-svc"; a remote peer registers the
-- same name (tests/integration/test_lua_round_robin.py).
local n = 0
return {
  name = "shared-svc",
  on_request = function(msg)
    n = n + 1
    return {by = "lua", n = n, payload = msg.payload}
  end,
  on_event = function(msg) end,
}
