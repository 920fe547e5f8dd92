-- bench/policies/payload.lua: hooks.lua plus a filter that reads the
-- payload of every request. Reading msg.payload makes the broker decode
-- the payload into a Lua table (lua_json.c, from the frame's bytes), once
-- per message; this policy
-- measures what that costs, at 64 B and at 4 KB.

local DENIED_ACTION = {
  drop_all_tables = "not on this bus",
}

local ALIASES = {
  inventory = "inventory-v2",
}

function filter(msg)
  if msg.type ~= "request" then
    return
  end
  if DENIED_ACTION[msg.action] then
    return false, "not on this bus"
  end
  local p = msg.payload
  if type(p) == "table" and p.drop == true then
    return false, "the payload asked to be dropped"
  end
end

function route(msg, ctx)
  local new = ALIASES[msg.dst]
  if new and ctx.has(new) then
    return new
  end
end
