-- later (tests/integration/test_lua_data.py): answers after the handler
-- returned, with bus.later(msg).
--   quote {sku}       asks "pricing", answers from its callback
--   timer {ms, text}  answers from a timer, ms later
--   twice             answers from a timer twice: the second is refused
--   fail              takes the request, then raises: the error is its answer
--   hold              never answers (until a reload abandons it)
local M = { name = "later" }

function M.on_request(msg)
  local answer = bus.later(msg)
  local p = msg.payload or {}
  if msg.action == "quote" then
    bus.request("pricing", "price", { sku = p.sku }, function(price, err)
      if err then answer(nil, "pricing: " .. err.code, "upstream_failed")
      else answer({ sku = p.sku, price = price.price }) end
    end, { timeout_ms = 2000 })
  elseif msg.action == "timer" then
    bus.after(p.ms, function()
      local ok, why = answer({ text = p.text })
      log.warn("late answer " .. p.text .. ": " .. tostring(ok) .. " " .. tostring(why))
    end)
  elseif msg.action == "twice" then
    bus.after(10, function()
      local a = answer("first")
      local b, why = answer("second")
      log.warn("twice: " .. tostring(a) .. " " .. tostring(b) .. " " .. tostring(why))
    end)
  elseif msg.action == "fail" then
    bus.after(10, function()
      local ok, why = answer("after the failure")
      log.warn("after fail: " .. tostring(ok) .. " " .. tostring(why))
    end)
    error("broken on purpose")
  elseif msg.action == "hold" then
    -- no answer
  end
  return "ignored: the answer comes later"
end

return M
