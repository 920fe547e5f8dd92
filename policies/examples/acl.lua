-- acl.lua: who may call what, by the sender's name (and, optionally, key).
--
-- The broker has already checked that msg.src is a name the sending
-- connection registered (or one nobody holds), so a rule on msg.src is a
-- rule on who really sent it. With CURVE on, a rule may also pin the key a
-- sender must have authenticated with.
--
-- Services not listed here are open to everyone; a listed service is
-- closed except for what its rules allow.

local rules = {
  -- service = { action = { senders allowed }, ["*"] = for any other action }
  ledger    = { refund = { "payment-service" }, ["*"] = { "*" } },
  inventory = { restock = { "warehouse", "admin-tool" }, stock = { "*" } },
}

-- sender name -> the CURVE public key it must have (only with CURVE)
local pinned_keys = {
  -- ["payment-service"] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
}

local function listed(senders, src)
  for _, who in ipairs(senders) do
    if who == "*" or who == src then return true end
  end
  return false
end

function authorize(msg, peer)
  if msg.type ~= "request" then return true end
  local pinned = pinned_keys[msg.src]
  if pinned and peer.key ~= pinned then
    return false, msg.src .. " must connect with its own key"
  end
  local service = rules[msg.dst]
  if not service then return true end
  local senders = service[msg.action] or service["*"]
  if senders and listed(senders, msg.src) then return true end
  return false, msg.src .. " may not call " .. msg.dst .. " " .. msg.action
end
