-- Test fixture (tests/integration/test_lua_bus.py): sends three events to
-- the requester, then answers. What a service sends leaves in the order it
-- was sent, the response after the events, though the broker holds a run's
-- messages back until its handlers are done (services_send).
return {
  name = "lua-ordered",
  on_request = function(msg)
    for i = 1, 3 do bus.event(msg.src, "note", {i = i}) end
    return {done = true}
  end,
}
