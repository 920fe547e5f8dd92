-- subscriber.lua: a hosted service that takes topic events (declared and
-- subscribed at run time) and publishes one; for tests/integration/test_lua_topics.py
local svc = {
  name = "lua-subscriber",
  subscribe = { "order.*", { "job.>", group = "lua-workers" } },
}

local seen = {}      -- topic -> count

function svc.on_event(msg)
  if msg.topic then
    seen[msg.topic] = (seen[msg.topic] or 0) + 1
  end
end

function svc.on_request(msg)
  local a = msg.action
  if a == "seen" then
    return seen
  elseif a == "subscribe" then
    bus.subscribe(msg.payload.topic)
    return true
  elseif a == "unsubscribe" then
    bus.unsubscribe(msg.payload.topic)
    return true
  elseif a == "publish" then
    bus.publish(msg.payload.topic, "from-lua", { n = msg.payload.n })
    return true
  elseif a == "bad" then
    local ok, err = pcall(bus.publish, "order.*", "x")
    return { ok = ok, err = tostring(err) }
  end
  return nil, "unknown action " .. tostring(a), "unknown_action"
end

return svc
