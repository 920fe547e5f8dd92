-- affinity.lua: requests about the same cart go to the same instance of
-- the service (same payload.cart_id -> same instance), e.g. for a service
-- that keeps carts in memory.
--
-- Rendezvous hashing: each instance gets a score hash(key, instance id) and
-- the highest wins. The choice is stable while the set of instances is;
-- when an instance comes or goes, only the carts it wins or held move.
-- Give the service's sockets a fixed ZeroMQ identity so that an instance
-- that reconnects keeps its carts. Messages without the field go
-- round-robin.

-- service -> the payload field to keep together
local AFFINITY = {
  ["cart"] = "cart_id",
}

-- FNV-1a, 32 bits
local function hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return h
end

function route(msg, ctx)
  local field = AFFINITY[msg.dst]
  if not field then
    return
  end
  local payload = msg.payload
  local key = type(payload) == "table" and payload[field] or nil
  if key == nil or key == json.null then
    return
  end
  key = tostring(key) .. "\0"
  local best, best_score
  for _, instance in ipairs(ctx.instances(msg.dst)) do
    local score = hash(key .. instance.id)
    if not best or score > best_score then
      best, best_score = instance.id, score
    end
  end
  if best then
    return msg.dst, best
  end
end
