-- Test fixture: version 2 of a live-reloaded service (test_lua_live.py).
local calls = 0
return {
  name = "lua-live",
  on_request = function(msg)
    calls = calls + 1
    return {version = 2, calls = calls}
  end,
}
