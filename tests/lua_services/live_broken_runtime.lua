-- Test fixture: a broken edit (fails while loading, on line 3).
local limits = nil
local n = limits.max
return { name = "lua-live", on_request = function() return {version = 4} end }
