-- smartshop.rules.acl: who may call what, by sender name (and CURVE key).
--
--   local acl = require "smartshop.rules.acl"
--   acl.new {
--     services = {
--       -- service = { action = { senders allowed }, ["*"] = for any other action }
--       ledger    = { refund = { "payment-service" }, ["*"] = { "*" } },
--       inventory = { restock = { "warehouse", "admin-*" }, stock = { "*" } },
--     },
--     keys = { ["payment-service"] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7" },
--   }
--
-- The broker has already checked that msg.src is a name the sending
-- connection registered (or one nobody holds), so a rule on msg.src is a
-- rule on who sent it. A service not listed is open to everyone; a listed
-- one is closed except for what its entries allow (an action with no
-- entry and no "*" entry: nobody).
--
-- Options:
--   services  service -> action -> senders (names, "prefix*" or "*").
--   keys      sender name -> the CURVE public key (Z85, as peer.key) its
--             connection must have authenticated with; a sender so pinned
--             is refused from any other key, or in plain mode (no key).
--   types     message types checked (default {"request"}).
--   code      the error code (default nil: "denied").
-- At least one of services, keys.
--
-- Hook: authorize(msg, peer). Refuses with
--   "<src> must connect with its own key" or "<src> may not call <dst> <action>".
-- Cost: two or three table look-ups (plus a find per "prefix*" sender).

local util = require "smartshop.util"
local lookup = util.lookup
local tostring, type, pairs, next = tostring, type, pairs, next

local MOD = "smartshop.rules.acl"
local TYPES = { request = true, response = true, error = true, event = true }

local _M = {}
local mt = { __index = _M }

function _M.new(opts)
  util.options(MOD, opts, { services = "table?", keys = "table?", types = "table?", code = "string?" })
  if not opts.services and not opts.keys then
    util.fail(MOD, "give at least one of the options services, keys")
  end
  local services = {}
  for service, actions in pairs(opts.services or {}) do
    if type(service) ~= "string" or type(actions) ~= "table" then
      util.fail(MOD, "option 'services': each entry is service name = { action = { senders } }")
    end
    local compiled = {}
    for action, senders in pairs(actions) do
      if type(action) ~= "string" then
        util.fail(MOD, "option 'services': %s: actions are names (or \"*\")", service)
      end
      compiled[action] = util.names(MOD, "services." .. service .. "." .. action, senders, true)
    end
    services[service] = compiled
  end
  local keys = {}
  for name, key in pairs(opts.keys or {}) do
    if type(name) ~= "string" or type(key) ~= "string" or key == "" then
      util.fail(MOD, "option 'keys': each entry is sender name = \"<its Z85 public key>\"")
    end
    keys[name] = key
  end
  -- guards (smartshop.policy): the types, and without pinned keys the
  -- listed services only
  return setmetatable({
    services = services, keys = keys, code = opts.code,
    types = util.set(MOD, "types", opts.types or { "request" }, TYPES),
    dsts = next(keys) == nil and services or nil,
  }, mt)
end

function _M:authorize(msg, peer)
  local src = msg.src
  local pinned = self.keys[src]
  if pinned and (peer == nil or peer.key ~= pinned) then
    return false, tostring(src) .. " must connect with its own key", self.code
  end
  local dst = msg.dst
  local service = self.services[dst]
  if not service then return end
  local action = msg.action
  local senders = service[action] or service["*"]
  if senders and lookup(senders, src) then return end
  return false, tostring(src) .. " may not call " .. tostring(dst) .. " " .. tostring(action), self.code
end

return _M
