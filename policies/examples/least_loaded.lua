-- least_loaded.lua: each request goes to the instance of its service with
-- the fewest requests in flight (handed to it and not yet answered);
-- instances tied for the fewest take turns.
--
-- Use it when requests differ a lot in cost, so that a slow instance is
-- not handed as many as a fast one (plain round-robin does that). Events
-- are not counted as load and go round-robin.

local turn = 0

function route(msg, ctx)
  if msg.type ~= "request" then
    return
  end
  local least, fewest = {}, math.huge
  for _, instance in ipairs(ctx.instances(msg.dst)) do
    if instance.load < fewest then
      least, fewest = { instance.id }, instance.load
    elseif instance.load == fewest then
      least[#least + 1] = instance.id
    end
  end
  if #least == 0 then
    return                          -- no instance: the broker says no_such_service
  end
  turn = turn + 1
  return msg.dst, least[turn % #least + 1]
end
