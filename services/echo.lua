-- echo-service: answers every request with the payload it was sent.
-- The seed's echo service, hosted by the broker: no process, no socket.
local echo = { name = "echo-service" }

function echo.on_request(msg)
  return msg.payload
end

return echo
