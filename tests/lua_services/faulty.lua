-- Test fixture: a service with bugs on purpose (tests/integration/test_lua_containment.py).
-- Each action misbehaves in one way; "ok" and "count" show it survives.
local count = 0  -- state across messages: must survive the faults

local actions = {}
function actions.ok(p) return {ok = true, echo = p} end
function actions.count() count = count + 1; return {count = count} end
function actions.crash() local t = nil; return t.field end   -- runtime error
function actions.raise() error("raised on purpose") end
function actions.loop() while true do end end               -- endless loop
function actions.pcall_loop()                               -- pcall cannot catch the budget
  for _ = 1, 10 do pcall(function() while true do end end) end
  return {escaped = true}
end
function actions.bomb()                                     -- memory bomb
  local hog = {}
  for i = 1, math.maxinteger do hog[i] = string.rep("x", 1000) .. i end
end
function actions.big_string() return #string.rep("x", 64 << 20) end  -- 64 MiB at once
function actions.not_json() return {f = function() end} end  -- cannot be encoded
function actions.fail() return nil, "refused on purpose" end
function actions.fail_code() return nil, "no such thing", "not_found" end
function actions.nothing() end                              -- nil -> payload null
function actions.forward(_, msg) return bus.json(msg.payload_json) end  -- the request's bytes back
function actions.change(p) p.added = true; return p end      -- msg.payload changed, then returned
function actions.bad_raw() return bus.json('{"a":') end      -- not JSON: bus.json raises
function actions.too_deep_raw() return bus.json(string.rep("[", 64) .. string.rep("]", 64)) end
function actions.too_deep_table()                           -- deeper than a message may nest
  local t = {}
  for _ = 1, 63 do t = {t} end
  return t
end
function actions.bad_utf8() return {s = "\xff\xfe"} end     -- lua-cjson would send bytes that are not UTF-8

return {
  name = "lua-faulty",
  on_request = function(msg)
    local act = actions[msg.action]
    if not act then return nil, "unknown action " .. msg.action, "unknown_action" end
    return act(msg.payload, msg)
  end,
  on_event = function(msg)  -- a crashing event handler: logged, nothing to answer
    if msg.action == "crash" then error("event handler crashed") end
    if msg.action == "loop" then while true do end end
  end,
}
