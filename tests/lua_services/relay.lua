-- Test fixture: re-emits what it gets to a remote test peer (the "probe"),
-- and runs bus calls on command (tests/integration/test_lua_bus.py).
--   request "probe"  {name}                         -> sets who gets the reports
--   request "call"   {dst, action, payload, timeout_ms, tag} -> bus.request; the
--                    callback reports event "callback" {tag, payload, err}
--   request "after"  {ms, tag}          -> timer id; fires event "timer" {tag}
--   request "every"  {ms, tag, times}   -> timer id; "timer" {tag, n} times times
--   request "cancel" {id}               -> {cancelled = bool}
--   request "event"  {dst, action, payload} / "broadcast" {action, payload}
--   request "log" {n} prints and logs; "sandbox" -> what is missing
--   request "ticks"  {on}  -> report the load-time timer's ticks ("tick" events)
local probe = nil
local ticks, ticking = 0, false

local function report(action, payload)
  if probe then bus.event(probe, action, payload) end
end

local function view(msg)
  return {msg_id = msg.msg_id, type = msg.type, src = msg.src, dst = msg.dst,
          action = msg.action, payload = msg.payload, ttl_ms = msg.ttl_ms,
          correlation_id = msg.correlation_id, timestamp = msg.timestamp,
          raw = msg.raw, table = msg:table()}
end

-- a timer started at load (allowed; sending from it is allowed too)
bus.every(50, function()
  ticks = ticks + 1
  if ticking and ticks % 4 == 0 then report("tick", {ticks = ticks}) end
end)

local actions = {}
function actions.probe(p) probe = p.name; return {probe = probe, name = bus.name} end
function actions.ticks(p) ticking = p.on == true; return {ticking = ticking} end
function actions.view(_, msg) return view(msg) end
function actions.now() return {now = bus.now_ms(), time = os.time()} end
function actions.call(p)
  local opts = p.timeout_ms and {timeout_ms = p.timeout_ms} or nil
  local id = bus.request(p.dst, p.action, p.payload, function(payload, err)
    report("callback", {tag = p.tag, payload = payload, err = err})
  end, opts)
  return {msg_id = id}
end
function actions.after(p)
  return {id = bus.after(p.ms, function() report("timer", {tag = p.tag}) end)}
end
function actions.every(p)
  local n, id = 0, nil
  id = bus.every(p.ms, function()
    n = n + 1
    report("timer", {tag = p.tag, n = n})
    if n == p.times then bus.cancel(id) end
  end)
  return {id = id}
end
function actions.cancel(p) return {cancelled = bus.cancel(p.id)} end
function actions.event(p) return {msg_id = bus.event(p.dst, p.action, p.payload)} end
function actions.broadcast(p) return {msg_id = bus.broadcast(p.action, p.payload)} end
function actions.log(p)
  print("printed", p.n, nil)
  log.info("info line"); log.warn("warn line"); log.error("error line"); log.debug("debug line")
  return true
end
function actions.sandbox()  -- what the sandbox leaves out: every value should be true
  -- require loads only the broker's own library (smartshop.*), never io or a path
  return {io = io == nil, load = load == nil,
          require = not pcall(require, "io") and not pcall(require, "smartshop/../../etc/passwd")
                    and type(require("smartshop.policy")) == "table",
          loadfile = loadfile == nil, dofile = dofile == nil, debug = debug == nil,
          execute = os.execute == nil, getenv = os.getenv == nil, remove = os.remove == nil,
          exit = os.exit == nil, dump = string.dump == nil, collectgarbage = collectgarbage == nil,
          package = package == nil, coroutine = coroutine == nil,
          json = json.decode(json.encode({a = {1, 2}})).a[2] == 2, null = json.null ~= nil,
          utf8 = utf8.len("h\u{e9}") == 2, date = type(os.date("!%Y")) == "string",
          now_ms = math.type(now_ms()) == "integer",
          no_gc = not pcall(setmetatable, {}, {__gc = function() end}),
          setmetatable = getmetatable(setmetatable({}, {__index = {}})) ~= nil}
end
function actions.bad_event() return {msg_id = bus.event("not a name!", "x")} end

return {
  name = "lua-relay",
  on_request = function(msg)
    local act = actions[msg.action]
    if not act then return nil, "unknown action " .. msg.action, "unknown_action" end
    return act(msg.payload, msg)
  end,
  on_event = function(msg) report("got_event", view(msg)) end,
  on_broadcast = function(msg) report("got_broadcast", view(msg)) end,
}
