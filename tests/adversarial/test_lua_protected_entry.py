#!/usr/bin/python3
"""Item 4 of the hardening issue: Lua API calls the broker made outside a
protected call. Each case below aborted the broker (a Lua panic) or hung it
outside the instruction budget before every call into Lua went through
sandbox_protected(); now the broker survives, keeps routing, and the
hostile script's metamethods never run outside its hooks' calls:

- route() returning a table whose __len raises, or whose __len and
  __index loop (the result was read with luaL_len / lua_geti, unprotected);
- a hook that removes itself and gives _G an __index that raises (the
  next message looked the hook up with lua_getglobal, unprotected);
- the Lua "strict mode" idiom (_G's __index raising on unknown globals)
  saved as an edit to a good policy (the reload looked up the five hook
  names with lua_getglobal);
- a service file whose table has a raising or looping __index, or that
  sets bus = nil (the loader read the table with lua_getfield and wrote
  bus.name through the global).
"""
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

ECHO = os.path.join(bp.SERVICES_DIR, "echo.lua")

ROUTE_POLICY = r'''
function route(msg, ctx)
  if msg.action == "len_raises" then
    return setmetatable({}, {__len = function() error("__len raised") end})
  elseif msg.action == "len_loops" then
    return setmetatable({}, {__len = function() while true do end end})
  elseif msg.action == "index_loops" then
    return setmetatable({}, {__len = function() return 3 end,
                             __index = function() while true do end end})
  elseif msg.action == "raw_list" then
    -- read raw: its array part, its metatable ignored
    return setmetatable({"rt-target"}, {__index = function() error("never read") end})
  end
end
'''

VANISHING_POLICY = r'''
seen = 0
function filter(msg)
  seen = seen + 1
  if msg.action == "vanish" then
    filter = nil
    setmetatable(_G, {__index = function(_, k) error("no global " .. tostring(k)) end})
  end
end
'''

GOOD_POLICY = r'''
function filter(msg)
  if msg.action == "forbidden" then return false, "not today" end
end
'''

# the common idiom (e.g. Programming in Lua's "strict.lua"): any read of an
# undeclared global raises; the hooks it does not define are such globals
STRICT_POLICY = r'''
local declared = {}
setmetatable(_G, {
  __newindex = function(t, k, v) declared[k] = true rawset(t, k, v) end,
  __index = function(_, k) error("variable '" .. tostring(k) .. "' is not declared", 2) end,
})
function filter(msg)
  if msg.action == "forbidden" then return false, "strictly not" end
end
'''

SERVICE_INDEX_RAISES = r'''
return setmetatable({name = "idx-raises", on_request = function(msg) return {ok = "raises"} end},
                    {__index = function(_, k) error("no field " .. tostring(k)) end})
'''
SERVICE_INDEX_LOOPS = r'''
-- no name: the loader's lookup of `name` runs __index
return setmetatable({on_request = function(msg) return {ok = "loops"} end},
                    {__index = function() while true do end end})
'''
SERVICE_NO_BUS = r'''
local b = bus
bus = nil
return {name = "no-bus", on_request = function(msg) return {ok = b.name} end}
'''


def round_trip(test, client, remote, name, payload):
    m = client.request(name, "ping", payload=payload)
    _, req = remote.recv(2.0 * bp.SLOW)
    test.assertEqual(req["msg_id"], m["msg_id"])
    remote.answer(req, payload={"pong": payload})
    _, body = client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)
    test.assertEqual(body.get("payload"), {"pong": payload}, bp.dump(body))


class RouteResultTest(bp.PolicyTestCase):
    POLICY = ROUTE_POLICY

    def test_route_results_with_hostile_metatables(self):
        client = self.peer(name="rt-client")
        target = self.peer(register="rt-target")
        for i, action in enumerate(("len_raises", "len_loops", "index_loops", "raw_list")):
            with self.subTest(action=action):
                start = time.monotonic()
                m = client.request("rt-target", action, payload=i)
                _, req = target.recv(2.0 * bp.SLOW)
                self.assertEqual(req["msg_id"], m["msg_id"])
                target.answer(req, payload={"n": i})
                _, body = client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)
                self.assertEqual(body.get("payload"), {"n": i})
                self.assertLess(time.monotonic() - start, 1.0 * bp.SLOW)
                self.assertAlive()
        self.assertNotIn("never read", self.broker.log_text())


class VanishingHookTest(bp.PolicyTestCase):
    POLICY = VANISHING_POLICY

    def test_hook_that_removes_itself_and_poisons_G(self):
        client = self.peer(name="van-client")
        remote = self.peer(register="van-target")
        m = client.request("van-target", "vanish", payload=0)
        _, req = remote.recv(2.0 * bp.SLOW)
        remote.answer(req, payload={"pong": 0})
        client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)
        # the hook was taken when the file loaded: it still runs, and the
        # lookups of the next messages never meet _G's __index
        for i in range(1, 6):
            round_trip(self, client, remote, "van-target", i)
        self.assertAlive()


class StrictModeReloadTest(bp.PolicyTestCase):
    POLICY = GOOD_POLICY

    def test_strict_mode_saved_over_a_good_policy(self):
        admin = self.peer(name="strict-admin")
        client = self.peer(name="strict-client")
        remote = self.peer(register="strict-target")
        with open(self.policy + ".tmp", "w") as f:
            f.write(STRICT_POLICY)
        os.rename(self.policy + ".tmp", self.policy)
        body = admin.call_broker("reload_policy", timeout=3.0 * bp.SLOW)
        self.assertEqual(body.get("payload", {}).get("status"), "ok", bp.dump(body))
        self.assertEqual(body["payload"].get("hooks"), "filter", bp.dump(body))
        self.assertAlive()
        # the new version runs: its refusal, and ordinary traffic
        m = client.request("strict-target", "forbidden")
        _, body = client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)
        self.assertError(body, "denied")
        self.assertIn("strictly not", body["payload"]["message"])
        round_trip(self, client, remote, "strict-target", 1)
        # the watcher's own reload of the same save must not hurt either
        time.sleep(0.3)
        round_trip(self, client, remote, "strict-target", 2)
        self.assertAlive()


class HostileServiceFileTest(bp.LuaServicesTestCase):
    @classmethod
    def make_services_dir(cls):
        d = bp.services_dir({"echo.lua": ECHO})
        for name, text in (("idx_raises.lua", SERVICE_INDEX_RAISES),
                           ("idx-loops.lua", SERVICE_INDEX_LOOPS),
                           ("no_bus.lua", SERVICE_NO_BUS)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d

    def ask(self, client, dst, payload=None):
        m = client.request(dst, "go", payload=payload)
        return client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)[1]

    def test_hostile_service_tables_load_and_answer(self):
        client = self.peer(name="svc-client")
        for dst, want in (("idx-raises", {"ok": "raises"}), ("idx-loops", {"ok": "loops"}),
                          ("no-bus", {"ok": "no-bus"}), ("echo-service", {"e": 1})):
            with self.subTest(dst=dst):
                body = self.ask(client, dst, {"e": 1})
                self.assertEqual(body.get("payload"), want, bp.dump(body))
        self.assertAlive()

    def test_reload_of_hostile_service_files(self):
        client = self.peer(name="svc-client2")
        mark = len(self.broker.log_text())
        # saved again (the watcher reloads each): the same hostile tables
        for name, text in (("idx_raises.lua", SERVICE_INDEX_RAISES),
                           ("no_bus.lua", SERVICE_NO_BUS)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text + "\n-- again\n")
        self.assertTrue(self.broker.wait_for_log(r"reloaded from no_bus\.lua", 3.0 * bp.SLOW, mark),
                        self.broker.log_text()[mark:])
        self.assertTrue(self.broker.wait_for_log(r"reloaded from idx_raises\.lua", 3.0 * bp.SLOW,
                                                 mark), self.broker.log_text()[mark:])
        body = self.ask(client, "no-bus")
        self.assertEqual(body.get("payload"), {"ok": "no-bus"}, bp.dump(body))
        body = self.ask(client, "echo-service", {"still": 1})
        self.assertEqual(body.get("payload"), {"still": 1}, bp.dump(body))
        self.assertAlive()


if __name__ == "__main__":
    bp.main()
