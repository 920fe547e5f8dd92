-- Test fixture: sends at top level, which is refused: not loaded.
bus.broadcast("hello", {})
return { name = "lua-top-send" }
