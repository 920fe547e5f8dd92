-- keeper (tests/integration/test_lua_data.py): keeps what it is given.
--   put {k, v} -> {k}; get {k} -> v as it was stored (JSON fidelity)
--   add {k, n} -> {k, n = the sum} (64-bit integer arithmetic)
--   roundtrip {text} -> json.encode(json.decode(text))
--   count -> {version, calls}: the calls survive a reload (on_reload)
local store, calls = {}, 0
local M = { name = "keeper" }
M.state = { store = store, calls = 0 }

function M.on_request(msg)
  calls = calls + 1
  M.state.calls = calls
  local p = msg.payload
  if msg.action == "put" then store[p.k] = p.v return { k = p.k } end
  if msg.action == "get" then return store[p.k] end
  if msg.action == "add" then store[p.k] = (store[p.k] or 0) + p.n return { k = p.k, n = store[p.k] } end
  if msg.action == "roundtrip" then return bus.json(json.encode(json.decode(p.text))) end
  if msg.action == "types" then
    return { i = math.type(p.i), f = math.type(p.f), a = getmetatable(p.a) ~= nil, big = tostring(p.big) }
  end
  if msg.action == "count" then return { version = 1, calls = calls } end
  return nil, "unknown action " .. tostring(msg.action), "unknown_action"
end

return M
