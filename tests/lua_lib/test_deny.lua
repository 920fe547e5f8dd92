local test, eq, raises, msg = T.test, T.eq, T.raises, T.msg

test("options are checked at load", function()
  local deny = T.wrap(T.sandbox().require "smartshop.rules.deny")
  raises(function() deny.new() end, "smartshop.rules.deny: options must be a table")
  raises(function() deny.new {} end, "give at least one of the options src, dst, action")
  raises(function() deny.new { srcs = {} } end, "unknown option 'srcs'")
  raises(function() deny.new { src = "x" } end, "option 'src' must be a table")
  raises(function() deny.new { src = { 3 } } end, "option 'src': a name must be a non-empty string")
  raises(function() deny.new { src = { "a*b" } } end, "'*' may only end a name")
  raises(function() deny.new { src = { x = 4 } } end, "the value for 'x' must be a string or true")
  raises(function() deny.new { src = { "x" }, types = { "reqest" } } end, "option 'types': unexpected value reqest")
end)

test("src, dst, action with reasons, patterns and the default reason", function()
  local deny = T.wrap(T.sandbox().require "smartshop.rules.deny")
  local r = deny.new {
    src = { ["legacy-scraper"] = "retired", "bot-*" },
    dst = { "quarantine" },
    action = { drop_all_tables = "not on this bus", "debug_*", danger = true },
    reason = "nope",
  }
  eq(T.pack(r.filter, r, msg { src = "legacy-scraper", dst = "x", action = "a" }), { false, "retired" })
  eq(T.pack(r.filter, r, msg { src = "bot-7", dst = "x" }), { false, "nope" })
  eq(T.pack(r.filter, r, msg { src = "ui", dst = "quarantine" }), { false, "nope" })
  eq(T.pack(r.filter, r, msg { src = "ui", dst = "x", action = "drop_all_tables" }), { false, "not on this bus" })
  eq(T.pack(r.filter, r, msg { src = "ui", dst = "x", action = "debug_dump" }), { false, "nope" })
  eq(T.pack(r.filter, r, msg { src = "ui", dst = "x", action = "danger" }), { false, "nope" })
  eq(T.pack(r.filter, r, msg { src = "ui", dst = "x", action = "list" }), {})
  eq(T.pack(r.filter, r, msg { src = "bo", dst = "x" }), {}, "a prefix is not a match")
  eq(T.pack(r.filter, r, msg { type = "event", src = "bot-1", dst = "x" })[2], "nope", "events are refused")
  eq(T.pack(r.filter, r, msg { type = "response", src = "bot-1", dst = "x" }), {}, "answers pass")
  eq(T.pack(r.filter, r, msg { src = "ui" }), {}, "absent fields pass")
end)

test("'*' denies everyone; types and code options", function()
  local deny = T.wrap(T.sandbox().require "smartshop.rules.deny")
  local r = deny.new { dst = { "*" }, types = { "event" }, code = "unavailable", reason = "closed" }
  eq(T.pack(r.filter, r, msg { type = "event", dst = "any" }), { false, "closed", "unavailable" })
  eq(T.pack(r.filter, r, msg { type = "request", dst = "any" }), {})
end)
