#!/usr/bin/python3
"""The policy sandbox: a filter tries each way out (io, os.execute, load,
loadfile, dofile, require, debug, string.dump, collectgarbage, ...) and
reports what it found through the `denied` reason; none is there. What the
sandbox does give (string, table, math, utf8, os.time/clock/date/difftime,
json, log, print) works."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

POLICY = r"""
-- what a name refers to, and what calling it did
local function probe(value, ...)
  if type(value) ~= "function" then
    return type(value)
  end
  local ok, err = pcall(value, ...)
  return ok and "CALLED" or "error"
end

local secret = "%(secret)s"

local PROBES = {
  io = function() return type(io) end,
  ["io.open"] = function() return probe(io and io.open, secret) end,
  ["os.execute"] = function() return probe(os.execute, "true") end,
  ["os.exit"] = function() return probe(os.exit, 0) end,
  ["os.getenv"] = function() return probe(os.getenv, "HOME") end,
  ["os.remove"] = function() return probe(os.remove, secret) end,
  ["os.rename"] = function() return probe(os.rename, secret, secret .. ".x") end,
  ["os.tmpname"] = function() return probe(os.tmpname) end,
  load = function() return probe(load, "return 1") end,
  loadstring = function() return probe(loadstring, "return 1") end,
  loadfile = function() return probe(loadfile, secret) end,
  dofile = function() return probe(dofile, secret) end,
  require = function() return probe(require, "io") end,
  ["require(path)"] = function() return probe(require, "smartshop/../../../etc/passwd") end,
  ["require(C)"] = function() return probe(require, "smartshop.cjson") end,
  package = function() return type(package) end,
  debug = function() return type(debug) end,
  ["string.dump"] = function() return probe(string.dump, probe) end,
  ["(''):dump"] = function() return probe(("").dump, probe) end,
  collectgarbage = function() return probe(collectgarbage, "count") end,
  coroutine = function() return type(coroutine) end,
  ["getmetatable(msg)"] = function(msg) return type(getmetatable(msg)) end,
}

local function globals()
  local names = {}
  for k in pairs(_G) do names[#names + 1] = tostring(k) end
  table.sort(names)
  return table.concat(names, " ")
end

function filter(msg)
  if msg.action == "probe" then
    local name = msg.payload.name
    return false, name .. "=" .. PROBES[name](msg)
  end
  if msg.action == "globals" then
    return false, globals()
  end
  if msg.action == "tools" then
    local t = os.time()
    local report = {
      upper = string.upper("ok"),
      concat = table.concat({ "a", "b" }, ","),
      floor = math.floor(2.5),
      utf8 = utf8.char(233),
      time = math.type(t),
      clock = type(os.clock()),
      date = os.date("!%%Y", 0),
      difftime = os.difftime(t + 5, t),
      json = json.decode('{"a":[1,2]}').a[2],
      null = json.decode("null") == json.null,
    }
    print("printed from the policy")
    log.warn("warned from the policy")
    return false, json.encode(report)
  end
end
"""

PROBE_NAMES = [
    "io", "io.open", "os.execute", "os.exit", "os.getenv", "os.remove", "os.rename",
    "os.tmpname", "load", "loadstring", "loadfile", "dofile", "package", "debug",
    "string.dump", "(''):dump", "collectgarbage", "coroutine",
]

ALLOWED_GLOBALS = {
    "_G", "_VERSION", "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
    "print", "rawequal", "rawget", "rawlen", "rawset", "select", "setmetatable", "tonumber",
    "tostring", "type", "warn", "xpcall", "string", "table", "math", "utf8", "os", "json", "log",
    "now_ms", "filter", "require",
}


class SandboxTest(bp.PolicyTestCase):
    @classmethod
    def policy_text(cls):
        cls.secret = os.path.join(cls.tmp, "secret.lua")
        with open(cls.secret, "w") as f:
            f.write("return 'the secret'\n")
        return POLICY % {"secret": cls.secret}

    def ask(self, action, payload=None):
        """The policy's answer: the reason of the `denied` error it returns."""
        c = self.peer(name="prober")
        req = c.request("nobody", action=action, payload=payload)
        body = self.expectError(c, "denied", correlation_id=req["msg_id"])
        return body["payload"]["message"]

    def test_no_way_out(self):
        for name in PROBE_NAMES:
            with self.subTest(probe=name):
                self.assertEqual(self.ask("probe", {"name": name}), name + "=nil")
        # require exists, for the broker's own library only: anything else raises
        for name in ("require", "require(path)", "require(C)"):
            with self.subTest(probe=name):
                self.assertEqual(self.ask("probe", {"name": name}), name + "=error")
        self.assertEqual(self.ask("probe", {"name": "getmetatable(msg)"}),
                         "getmetatable(msg)=string", "the message's methods are hidden")
        self.assertTrue(os.path.exists(self.secret), "os.remove reached the file")
        self.assertFalse(os.path.exists(self.secret + ".x"))
        self.assertTrue(self.broker.alive())

    def test_only_the_documented_globals(self):
        names = set(self.ask("globals").split())
        self.assertLessEqual(names, ALLOWED_GLOBALS, "unexpected globals: %s"
                             % sorted(names - ALLOWED_GLOBALS))
        self.assertLessEqual(ALLOWED_GLOBALS - {"warn"}, names)

    def test_the_tools_it_does_have(self):
        start = len(self.broker.log_text())
        report = json.loads(self.ask("tools"))
        self.assertEqual(report, {"upper": "OK", "concat": "a,b", "floor": 2, "utf8": "é",
                                  "time": "integer", "clock": "number", "date": "1970",
                                  "difftime": 5, "json": 2, "null": True})
        self.assertTrue(self.broker.wait_for_log(r"INFO .*printed from the policy", 1.0, start))
        self.assertTrue(self.broker.wait_for_log(r"WARN .*warned from the policy", 1.0, start))


if __name__ == "__main__":
    bp.main()
