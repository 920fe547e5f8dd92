-- echo-service: answers every request with the payload it was sent.
-- The seed's echo service, hosted by the broker: no process, no socket.
-- msg.payload_json is the payload's JSON text as it came, and bus.json()
-- sends such text on as it is: the payload is never decoded into a Lua
-- table and encoded again. (`return msg.payload` answers with the same
-- value, re-encoded, for about 45 % more work per round trip in all:
-- docs/performance.md.)
local echo = { name = "echo-service" }

function echo.on_request(msg)
  return bus.json(msg.payload_json)
end

return echo
