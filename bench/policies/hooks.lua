-- bench/policies/hooks.lua: the benchmark's "several hooks" policy.
--
-- filter() runs for every request and every answer, route() for every
-- request; both read envelope fields (msg.action, msg.dst, msg.type) and
-- change nothing, as a deny list and an alias policy do
-- (policies/examples/deny_list.lua, alias.lua). The benchmark's requests
-- pass both, so what it measures is the cost of hooks that look.

local DENIED_ACTION = {
  drop_all_tables = "not on this bus",
  debug_dump = "debug actions are off in production",
}

local ALIASES = {
  inventory = "inventory-v2",
}

function filter(msg)
  if msg.type ~= "request" and msg.type ~= "event" then
    return
  end
  local why = DENIED_ACTION[msg.action]
  if why then
    return false, why
  end
  if msg.dst == "quarantine" then
    return false, "quarantined"
  end
end

function route(msg, ctx)
  local new = ALIASES[msg.dst]
  if new and ctx.has(new) then
    return new
  end
end
