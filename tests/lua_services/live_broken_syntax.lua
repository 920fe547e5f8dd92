-- Test fixture: a broken edit (syntax error on line 4).
return {
  name = "lua-live",
  on_request = function(msg) return {version = 3 end,
}
