-- inventory: units on hand per SKU, with low-stock alerts.
--   request "stock"   {sku = "A1"}          -> {sku = "A1", qty = 7}  (no sku: all counts)
--   request "reserve" {sku = "A1", qty = 3} -> {sku = "A1", qty = 4}  (or error insufficient_stock)
--   request "restock" {sku = "A1", qty = 10} -> {sku = "A1", qty = 14}
-- Every CHECK_MS a timer looks for SKUs below THRESHOLD and publishes one
-- "low_stock" event each (again only after a restock), with the unit price
-- from the "pricing" service when it answers in time. docs/lua-services.md
local THRESHOLD = 5          -- fewer units than this is low
local CHECK_MS = 500         -- how often the timer looks
local ALERT_TO = "broadcast" -- or a service name, e.g. "purchasing"
local PRICING = "pricing"    -- asked {sku} -> {price = number}; may be absent

local stock = {}             -- sku -> units; module state lives across messages
local alerted = {}           -- sku -> true once its low_stock event is out

local function alert(sku)
  bus.request(PRICING, "price", {sku = sku}, function(answer, err)
    local event = {sku = sku, qty = stock[sku], threshold = THRESHOLD}
    if err then              -- no_such_service, timeout, or pricing's own error
      log.warn("no price for " .. sku .. ": " .. tostring(err.code))
    elseif type(answer) == "table" then
      event.unit_price = answer.price
    end
    if ALERT_TO == "broadcast" then bus.broadcast("low_stock", event)
    else bus.event(ALERT_TO, "low_stock", event) end
  end, {timeout_ms = 300})
end

bus.every(CHECK_MS, function()  -- timers may start at load; sends run later
  for sku, qty in pairs(stock) do
    if qty < THRESHOLD and not alerted[sku] then
      alerted[sku] = true
      alert(sku)
    end
  end
end)

local actions = {}            -- action -> function(sku, qty): payload | nil, message, code
function actions.stock(sku) return sku and {sku = sku, qty = stock[sku] or 0} or stock end
function actions.reserve(sku, qty)
  local have = stock[sku] or 0
  if qty > have then return nil, sku .. ": only " .. have .. " on hand", "insufficient_stock" end
  stock[sku] = have - qty
  return {sku = sku, qty = stock[sku]}
end
function actions.restock(sku, qty)
  stock[sku], alerted[sku] = (stock[sku] or 0) + qty, nil
  return {sku = sku, qty = stock[sku]}
end

return {
  name = "inventory",
  on_request = function(msg)
    local act = actions[msg.action]
    if not act then return nil, "unknown action: " .. msg.action, "unknown_action" end
    local p = type(msg.payload) == "table" and msg.payload or {}
    local sku, qty = p.sku, math.tointeger(p.qty)
    if msg.action ~= "stock" and (type(sku) ~= "string" or not qty or qty < 1) then
      return nil, "payload must be {sku = string, qty = positive integer}", "bad_request"
    end
    return act(sku, qty)
  end,
}
