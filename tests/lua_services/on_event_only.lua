-- Test fixture: takes events, no requests (a request gets service_error).
-- Its name comes from the file name: "on_event_only".
local seen = 0
return {
  on_event = function(msg) seen = seen + 1 end,
}
