-- rate_limit.lua: at most LIMIT requests per second from each sender (src);
-- the rest of that second get `denied` with the reason "rate limit".
--
-- Use it to keep one runaway client from starving the others. The window
-- is the wall-clock second (os.time()), so a burst that spans a second's
-- boundary may see up to twice LIMIT pass. Requests to the broker's own
-- service (ping, stats...) are not counted. The counters live in this
-- Lua state: saving the file (a reload) starts them again from zero.

local LIMIT = 20

local second, counts = -1, {}

function filter(msg)
  if msg.type ~= "request" or msg.dst == "broker" then
    return
  end
  local now = os.time()
  if now ~= second then
    second, counts = now, {}       -- a new second: forget the last one
  end
  local n = (counts[msg.src] or 0) + 1
  counts[msg.src] = n
  if n > LIMIT then
    return false, "rate limit"
  end
end
