-- bench/services/bench-inventory.lua: services/inventory.lua's shape for
-- the benchmark (bench/run.sh, the "inv" target): decodes its payload
-- (msg.payload, a Lua table), keeps state across messages and answers with
-- a table it builds, encoded by the broker. loadgen's payload is
-- {"data": "xx..."}: its text is the SKU here.
local stock = {}

return {
  name = "bench-inventory",
  on_request = function(msg)
    local p = type(msg.payload) == "table" and msg.payload or {}
    local sku = p.data
    if type(sku) ~= "string" then
      return nil, "payload must be {data = string}", "bad_request"
    end
    local qty = (stock[sku] or 0) + 1
    stock[sku] = qty
    return { sku = sku, qty = qty, action = msg.action }
  end,
}
