-- keeper whose on_reload fails: the reload is refused, the old version
-- keeps running with its state.
return {
  name = "keeper",
  on_reload = function(old) error("cannot take " .. type(old)) end,
  on_request = function(msg) return { version = 3 } end,
}
