-- smartshop.rules.affinity: the same key goes to the same instance.
--
--   local affinity = require "smartshop.rules.affinity"
--   affinity.new { service = "cart", field = "cart_id" }
--
-- Requests and events for `service` whose payload has `field` go to one
-- instance chosen by rendezvous hashing: every instance scores
-- FNV-1a(key .. "\0" .. instance id) and the highest wins. The choice is
-- stable while the set of instances is; when an instance leaves, only the
-- keys it won move (each to its next-best), and when one comes, only the
-- keys it now wins move to it. Give the service's sockets a fixed
-- ZMQ_IDENTITY so an instance that reconnects keeps its keys. Messages
-- without the field (absent, null, a table) go round-robin.
--
-- The key is the field's value as text: a string as it is, a whole number
-- without ".0" (JSON 3 and 3.0 are the same key), true/false.
--
-- Options: service (a name), field (a top-level payload field).
--
-- Hook: route. Cost: the payload's decode (first read of msg.payload in
-- this call), ctx.instances() (a table per call, built by the broker),
-- and a hash over key and each instance id: a loop of #id steps per
-- instance; no string built per instance.

local util = require "smartshop.util"
local fnv1a, key_of = util.fnv1a, util.key
local type = type

local MOD = "smartshop.rules.affinity"

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts, { service = "string", field = "string" })
  return setmetatable({ service = opts.service, field = opts.field,
                        dsts = { [opts.service] = true } }, mt)   -- guard
end

-- The instance id that `key` maps to among `instances` ({ {id = ...}, ... }).
function _M.owner(key, instances)
  local h0 = fnv1a("\0", fnv1a(key))
  local best, best_score
  for i = 1, #instances do
    local id = instances[i].id
    local score = fnv1a(id, h0)
    if best == nil or score > best_score then
      best, best_score = id, score
    end
  end
  return best
end

function _M:route(msg, ctx)
  local service = self.service
  local payload = msg.payload
  if type(payload) ~= "table" then return end
  local key = key_of(payload[self.field])
  if key == nil then return end
  local best = _M.owner(key, ctx.instances(service))
  if best then return service, best end
end

return _M
