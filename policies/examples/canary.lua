-- canary.lua: a share of a service's requests goes to its canary, e.g.
-- 10% of "checkout" to "checkout-canary", while the canary is up.
--
-- The split is counted, not drawn at random: with percent = 10, exactly
-- one request in every ten goes to the canary, evenly spread, so the
-- canary's share in `stats` is what you configured. Start the canary,
-- raise the percent step by step (save the file each time), then rename
-- it or stop the old version. Events are not split.

-- service -> its canary and the share of requests (0..100) it gets
local CANARIES = {
  ["checkout"] = { name = "checkout-canary", percent = 10 },
}

-- service -> percent points collected; every 100 send one to the canary
local credit = {}

function route(msg, ctx)
  if msg.type ~= "request" then
    return
  end
  local canary = CANARIES[msg.dst]
  if not canary or not ctx.has(canary.name) then
    return
  end
  local points = (credit[msg.dst] or 0) + canary.percent
  if points >= 100 then
    credit[msg.dst] = points - 100
    return canary.name
  end
  credit[msg.dst] = points
end
