-- smartshop.policy: a policy made of rules.
--
--   local policy = require "smartshop.policy"
--   local deny   = require "smartshop.rules.deny"
--   local alias  = require "smartshop.rules.alias"
--
--   policy.use {
--     deny.new { action = { "drop_all_tables" } },
--     alias.new { aliases = { inventory = "inventory-v2" } },
--   }
--
-- A rule is a table with any of the methods authorize, filter, route,
-- on_register, on_unregister, on_outcome, called as rule:filter(msg) etc.
-- (the broker's hook arguments after self). The rules in smartshop.rules.*
-- are such tables; a policy may add its own inline:
--
--   policy.use {
--     deny.new { src = { "legacy-scraper" } },
--     { route = function(self, msg, ctx) if msg.dst == "x" then return "y" end end },
--   }
--
-- A rule may also declare guards, sets keyed by name: rule.types (the
-- message types it looks at, e.g. {request = true}) and rule.dsts (the
-- destinations). The composed authorize, filter and route are called for
-- the types some rule looks at only, read msg.dst once, and call a rule
-- only for messages its guards let in.
-- The library's rules declare theirs; their methods leave the check to
-- the composition (call them through policy.use or policy.hooks).
--
-- policy.use(rules) defines, as globals, only the hooks that at least one
-- rule has: a hook no rule uses stays undefined, so the broker skips it
-- and a message costs nothing there. Where every rule of a hook declares
-- types, the hook is a table of functions by message type (callable, too),
-- so the broker does not call it at all for the other types. It raises an error if a hook it
-- would define is already defined (a hand-written one: make it a rule).
--
-- How the rules' answers combine, hook by hook:
--   authorize(msg, peer), filter(msg): the rules in order; the first
--     refusal (false, reason [, code]) is the answer and later rules are
--     not asked. A filter that returns a table (a rewrite) hands that
--     table to the later rules as their msg, and the last rewrite is the
--     answer (a plain table: same fields as msg, payload decoded; use
--     policy.table(msg) to get a table to change from either).
--   route(msg, ctx): the rules in order; the first that returns a route
--     (a name, a name and an instance id, or a list) is the answer.
--   on_register(name, peer): the rules in order until one refuses.
--   on_unregister(name, peer), on_outcome(outcome): every rule, in order.
--
-- Refusals: false, "reason", code: code is an error code for the sender,
-- "denied" when absent; the rules use "bad_payload" and "unavailable".
--
-- Cost: the composed hook's call (none for a type no rule looks at), one
-- read of msg.dst (if a rule for that type declares dsts), a look-up per
-- guarded rule, and a Lua call per rule let in; nothing is allocated per
-- message.

local type, pairs, ipairs, error, tostring, rawget = type, pairs, ipairs, error, tostring, rawget
local concat = table.concat

local _M = { _VERSION = "0.1" }

_M.HOOKS = { "authorize", "filter", "route", "on_register", "on_unregister", "on_outcome" }
local KNOWN = {}
for _, h in ipairs(_M.HOOKS) do KNOWN[h] = true end

-- A table to change and return from filter: msg:table() for the broker's
-- view, msg itself when an earlier rule already rewrote it.
function _M.table(msg)
  local copy = msg.table
  if type(copy) == "function" then return copy(msg) end
  return msg
end

-- The rules' guards: a rule may declare `types` and `dsts`, sets of the
-- message types and destinations it looks at. A composed hook keeps one
-- chain of rules per message type (none: that type is never given to the
-- hook, e.g. answers when every rule looks at requests only), reads
-- msg.dst once if a rule of the chain declares dsts, and calls only the
-- rules those let in.
local MSG_TYPES = { "request", "response", "error", "event" }

local function add(chain, f, o)
  local n = chain.n + 1
  chain.n = n
  chain.fns[n], chain.objs[n], chain.dsts[n] = f, o, o.dsts or false
  if o.dsts then chain.need_dst = true end
  if n == 1 then chain.f1, chain.o1, chain.d1 = f, o, o.dsts or false end
end

local function new_chain()
  return { n = 0, fns = {}, objs = {}, dsts = {}, need_dst = false }
end

-- -> all (one chain, when no rule declares types) or nil, by_type
local function split(fns, objs)
  local typed = false
  for i = 1, #objs do if objs[i].types then typed = true end end
  if not typed then
    local c = new_chain()
    for i = 1, #fns do add(c, fns[i], objs[i]) end
    return c, nil
  end
  local by_type = {}
  for _, t in ipairs(MSG_TYPES) do
    local c = new_chain()
    for i = 1, #fns do
      local ty = objs[i].types
      if not ty or ty[t] then add(c, fns[i], objs[i]) end
    end
    if c.n > 0 then by_type[t] = c end
  end
  return nil, by_type
end

-- A composed authorize, filter or route: one function when no rule
-- declares types; else a table of functions by message type, one per type
-- some rule looks at, each over that type's chain alone. The broker calls
-- the function for a message's type and skips the types the table lacks
-- (docs/policies.md, "A hook by message type"): no msg.type read, and no
-- call at all for, say, answers when every rule looks at requests. The
-- table can be called too (__call picks by msg.type), for Lua callers.
local TYPED = {
  __call = function(self, msg, b)
    local f = rawget(self, msg.type)
    if f then return f(msg, b) end
  end,
}

local function by_type(make, fns, objs)
  local all, typed = split(fns, objs)
  if all then return make(all) end
  local hook = {}
  for t, c in pairs(typed) do hook[t] = make(c) end
  return setmetatable(hook, TYPED)
end

-- The chains, made once at load: a rule and its guard are upvalues, and
-- a chain of one rule is a single call.

-- authorize(msg, peer): first refusal wins.
local function authorize_of(c)
  local n, f, o, d = c.n, c.fns, c.objs, c.dsts
  if n == 1 then
    local f1, o1, d1 = c.f1, c.o1, c.d1
    return function(msg, peer)
      if d1 and not d1[msg.dst] then return end
      local ok, reason, code = f1(o1, msg, peer)
      if ok == false then return false, reason, code end
    end
  end
  local need_dst = c.need_dst
  return function(msg, peer)
    local dst = need_dst and msg.dst
    for i = 1, n do
      local ds = d[i]
      if not ds or ds[dst] then
        local ok, reason, code = f[i](o[i], msg, peer)
        if ok == false then return false, reason, code end
      end
    end
  end
end

-- on_register(name, peer): first refusal wins (no guards: no msg).
local function register_chain(fns, objs)
  local n = #fns
  return function(name, peer)
    for i = 1, n do
      local ok, reason, code = fns[i](objs[i], name, peer)
      if ok == false then return false, reason, code end
    end
  end
end

-- filter(msg): first refusal wins; a rewrite is what later rules see (it
-- keeps the chain of msg's type: a rewrite may not change the type).
local function filter_of(c)
  local n, f, o, d = c.n, c.fns, c.objs, c.dsts
  if n == 1 then
    local f1, o1, d1 = c.f1, c.o1, c.d1
    if not d1 then
      return function(msg) return f1(o1, msg) end
    end
    return function(msg)
      if d1[msg.dst] then return f1(o1, msg) end
    end
  end
  local need_dst = c.need_dst
  if n == 2 and not need_dst then
    -- the common case unrolled: two rules without a dst guard (each VM
    -- instruction counts: the budget's count hook traps on every one)
    local f1, o1, f2, o2 = f[1], o[1], f[2], o[2]
    return function(msg)
      local r, reason, code = f1(o1, msg)
      if r == false then return false, reason, code end
      local cur = msg
      if r ~= nil and r ~= true then cur = r end
      r, reason, code = f2(o2, cur)
      if r == false then return false, reason, code end
      if r ~= nil and r ~= true then return r end
      if cur ~= msg then return cur end
    end
  end
  return function(msg)
    local dst = need_dst and msg.dst
    local cur = msg
    for i = 1, n do
      local ds = d[i]
      if not ds or ds[dst] then
        local r, reason, code = f[i](o[i], cur)
        if r == false then
          return false, reason, code
        elseif r ~= nil and r ~= true then
          cur = r
          if need_dst then dst = r.dst end
        end
      end
    end
    if cur ~= msg then return cur end
  end
end

-- route(msg, ctx): the first route given wins.
local function route_of(c)
  local n, f, o, d = c.n, c.fns, c.objs, c.dsts
  if n == 1 then
    local f1, o1, d1 = c.f1, c.o1, c.d1
    if not d1 then
      return function(msg, ctx) return f1(o1, msg, ctx) end
    end
    return function(msg, ctx)
      if d1[msg.dst] then return f1(o1, msg, ctx) end
    end
  end
  local need_dst = c.need_dst
  return function(msg, ctx)
    local dst = need_dst and msg.dst
    for i = 1, n do
      local ds = d[i]
      if not ds or ds[dst] then
        local name, instance = f[i](o[i], msg, ctx)
        if name ~= nil then return name, instance end
      end
    end
  end
end

local function authorize_chain(fns, objs) return by_type(authorize_of, fns, objs) end
local function filter_chain(fns, objs) return by_type(filter_of, fns, objs) end
local function route_chain(fns, objs) return by_type(route_of, fns, objs) end

-- on_unregister, on_outcome: everyone is told.
local function notify_chain(fns, objs)
  local n = #fns
  if n == 1 then
    local f, o = fns[1], objs[1]
    return function(a, b) f(o, a, b) end
  end
  return function(a, b)
    for i = 1, n do fns[i](objs[i], a, b) end
  end
end

local BUILD = {
  authorize = authorize_chain, on_register = register_chain,
  filter = filter_chain, route = route_chain,
  on_unregister = notify_chain, on_outcome = notify_chain,
}

-- The composed hooks of `rules` as a table {hook = function}, holding only
-- the hooks some rule has. policy.use installs them; tests call this.
local function compose(rules, lvl)
  if type(rules) ~= "table" then
    error("smartshop.policy: use() takes a list of rules, got " .. type(rules), lvl)
  end
  local per_hook = {}
  local n = #rules
  for k in pairs(rules) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      error("smartshop.policy: rules must be a list, found key " .. tostring(k), lvl)
    end
  end
  for i = 1, n do
    local rule = rules[i]
    if type(rule) ~= "table" then
      error("smartshop.policy: rule " .. i .. " is a " .. type(rule) .. ", not a rule", lvl)
    end
    for _, g in ipairs { "types", "dsts" } do
      if rule[g] ~= nil and type(rule[g]) ~= "table" then
        error("smartshop.policy: rule " .. i .. "'s " .. g .. " is not a set (a table)", lvl)
      end
    end
    local any = false
    for _, hook in ipairs(_M.HOOKS) do
      local f = rule[hook]
      if f ~= nil then
        if type(f) ~= "function" then
          error("smartshop.policy: rule " .. i .. "'s " .. hook .. " is not a function", lvl)
        end
        local slot = per_hook[hook]
        if not slot then
          slot = { fns = {}, objs = {} }
          per_hook[hook] = slot
        end
        slot.fns[#slot.fns + 1] = f
        slot.objs[#slot.objs + 1] = rule
        any = true
      end
    end
    if not any then
      error("smartshop.policy: rule " .. i .. " has none of the hooks "
            .. concat(_M.HOOKS, ", "), lvl)
    end
  end
  local hooks = {}
  for hook, slot in pairs(per_hook) do
    hooks[hook] = BUILD[hook](slot.fns, slot.objs)
  end
  return hooks
end

function _M.hooks(rules)
  return compose(rules, 3)
end

-- Defines the composed hooks as globals (in env, _G by default). Returns
-- the table of hooks defined.
function _M.use(rules, env)
  local hooks = compose(rules, 3)
  env = env or _G
  for hook, f in pairs(hooks) do
    if rawget(env, hook) ~= nil then
      error("smartshop.policy: " .. hook .. " is already defined; write it as a rule instead", 2)
    end
  end
  for hook, f in pairs(hooks) do env[hook] = f end
  return hooks
end

return _M
