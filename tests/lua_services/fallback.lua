-- Test fixture: events only (no on_request, no on_broadcast), so broadcasts
-- fall back to on_event. An event "probe" {name} says whom to report to.
local probe = nil
return {
  name = "lua-fallback",
  on_event = function(msg)
    if msg.action == "probe" then probe = msg.payload.name; return end
    if probe then
      bus.event(probe, "fallback_got", {action = msg.action, src = msg.src, dst = msg.dst,
                                        payload = msg.payload})
    end
  end,
}
