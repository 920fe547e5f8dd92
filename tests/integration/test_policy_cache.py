#!/usr/bin/python3
"""The decision cache (docs/policies.md, "The decision cache"): the broker
keeps the decision of a filter() or route() whose code stores nothing and
calls nothing but known pure functions, keyed on the names it read, and
answers the next message with the same names without running Lua. A
policy with state, a clock, a registry look-up or a read of anything but
names must decide exactly as if nothing were kept. Each class below would
fail on a cache that kept too much (a wrong decision) or nothing at all
(no hits)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def cache_counts(peer):
    body = peer.call_broker("ping")
    pol = body["payload"]["policy"]
    return pol["cache_hits"], pol["cache_misses"]


class CacheCase(bp.PolicyTestCase):
    def ask(self, c, svc, action="get", expect=None):
        """A request from c to svc: the refusal's message, or None if it arrived."""
        req = c.request(svc.name, action=action)
        if expect == "refused":
            body = self.expectError(c, "denied", correlation_id=req["msg_id"])
            return body["payload"]["message"]
        _, got = svc.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        svc.answer(got, payload={})
        c.recv_answer(req["msg_id"])
        return None


class PureDenyListTest(CacheCase):
    POLICY = r"""
local DENIED = { drop = "not on this bus" }
function filter(msg)
  if msg.type ~= "request" then return end
  local why = DENIED[msg.action]
  if why then return false, why end
end
"""

    def test_pure_decisions_are_kept_and_still_right(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        hits0, _ = cache_counts(c)
        for _ in range(5):
            self.assertEqual(self.ask(c, svc, "drop", expect="refused"), "not on this bus")
            self.assertIsNone(self.ask(c, svc, "get"))
        hits, misses = cache_counts(c)
        # request and answer, passed and refused: all but the first of each kept
        self.assertGreaterEqual(hits - hits0, 8, (hits, misses))


class WrappedFunctionsTest(CacheCase):
    POLICY = r"""
function filter(msg)
  if msg.type == "request" and msg.action:byte(1) == 100 and tonumber("1") == 1
     and ("x"):rep(2) == "xx" and rawequal(msg.src, msg.src) then
    return false, "d for denied"
  end
end
"""

    def test_functions_the_sandbox_charges_are_pure_too(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        hits0, _ = cache_counts(c)
        for _ in range(4):
            self.assertEqual(self.ask(c, svc, "drop", expect="refused"), "d for denied")
        hits, _ = cache_counts(c)
        self.assertGreaterEqual(hits - hits0, 3)


class AddressTest(CacheCase):
    POLICY = r"""
function filter(msg)
  if msg.type == "request" then return false, "at " .. tostring({}) end
end
"""

    def test_a_reason_with_an_address_is_made_every_time(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        reasons = [self.ask(c, svc, "get", expect="refused") for _ in range(6)]
        self.assertTrue(all(r.startswith("at table: ") for r in reasons), reasons)
        self.assertGreater(len(set(reasons)), 1, reasons)


class WeakTableTest(CacheCase):
    POLICY = r"""
local weak = setmetatable({}, { __mode = "v" })
weak[1] = {}
function filter(msg)
  if msg.type ~= "request" then return end
  if msg.action == "churn" then
    for i = 1, 50000 do local t = {} end
    return
  end
  if weak[1] then return false, "still there" end
end
"""

    def test_what_the_collector_clears_is_seen(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        self.assertEqual(self.ask(c, svc, "get", expect="refused"), "still there")
        self.assertEqual(self.ask(c, svc, "get", expect="refused"), "still there")
        for _ in range(40):
            self.assertIsNone(self.ask(c, svc, "churn"))
            req = c.request(svc.name, action="get")
            _, body, _ = c.recv_until(lambda m: m.get("correlation_id") == req["msg_id"]
                                      or m.get("type") == "error", timeout=0.5) \
                if svc.recv_raw(0.3) is None else (None, None, None)
            if body is None:
                return                              # weak[1] collected, and seen
            self.assertEqual(body["payload"]["message"], "still there")
        self.fail("the get stayed refused after 40 collections' worth of garbage")


class StateInTheHookTest(CacheCase):
    POLICY = r"""
local n = 0
function filter(msg)
  if msg.type ~= "request" then return end
  n = n + 1
  if n % 3 == 0 then return false, "every third" end
end
"""

    def test_a_hook_that_counts_is_asked_every_time(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        got = [self.ask(c, svc, "get", expect="refused" if i % 3 == 2 else None) for i in range(9)]
        self.assertEqual(got, [None, None, "every third"] * 3)


class StateInAHelperTest(CacheCase):
    POLICY = r"""
local seen = {}
local function count(k)
  seen[k] = (seen[k] or 0) + 1
  return seen[k]
end
function filter(msg)
  if msg.type == "request" and count(msg.src) > 2 then return false, "two each" end
end
"""

    def test_a_hook_whose_callee_stores_is_asked_every_time(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        got = [self.ask(c, svc, "get", expect="refused" if i >= 2 else None) for i in range(4)]
        self.assertEqual(got, [None, None, "two each", "two each"])


class StateInAMetamethodTest(CacheCase):
    POLICY = r"""
local calls = 0
local LIMITS = setmetatable({}, { __index = function(_, k)
  calls = calls + 1
  if calls > 2 then return "too many" end
end })
function filter(msg)
  if msg.type ~= "request" then return end
  local why = LIMITS[msg.action]
  if why then return false, why end
end
"""

    def test_a_metamethod_that_stores_is_seen(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        got = [self.ask(c, svc, "get", expect="refused" if i >= 2 else None) for i in range(4)]
        self.assertEqual(got, [None, None, "too many", "too many"])


class ClockTest(CacheCase):
    POLICY = r"""
local start = now_ms()
function filter(msg)
  if msg.type == "request" and now_ms() - start > 700 then return false, "too late" end
end
"""

    def test_a_hook_that_reads_the_clock_is_asked_every_time(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        self.assertIsNone(self.ask(c, svc, "get"))
        self.assertIsNone(self.ask(c, svc, "get"))
        time.sleep(1.0)
        self.assertEqual(self.ask(c, svc, "get", expect="refused"), "too late")


class MessageIdTest(CacheCase):
    POLICY = r"""
function filter(msg)
  if msg.type == "request" and msg.action == "odd" and msg.msg_id:sub(-1) == "1" then
    return false, "ends in 1"
  end
end
"""

    def test_a_hook_that_reads_more_than_names_is_asked_every_time(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        self.assertIsNone(self.ask(c, svc, "get"))        # kept: read type and action only
        for end in "0101":
            req = bp.msg("request", "shop-ui", svc.name, "odd", payload={})
            req["msg_id"] = req["msg_id"][:-1] + end
            c.send(req)
            if end == "1":
                body = self.expectError(c, "denied", correlation_id=req["msg_id"])
                self.assertEqual(body["payload"]["message"], "ends in 1")
            else:
                _, got = svc.recv()
                self.assertEqual(got["msg_id"], req["msg_id"])
                svc.answer(got, payload={})
                c.recv_answer(req["msg_id"])


class OutcomeStateTest(CacheCase):
    POLICY = r"""
local failures = 0
function on_outcome(o)
  if o.outcome == "error" then failures = failures + 1 end
end
function filter(msg)
  if msg.type == "request" and failures > 0 then return false, "open" end
end
"""

    def test_state_changed_by_another_hook_is_seen(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        self.assertIsNone(self.ask(c, svc, "get"))
        req = c.request(svc.name, action="get")
        _, got = svc.recv()
        svc.answer(got, type="error", payload={"code": "internal", "message": "boom"})
        c.recv_answer(req["msg_id"])
        self.assertEqual(self.ask(c, svc, "get", expect="refused"), "open")


class RegistryTest(CacheCase):
    POLICY = r"""
function route(msg, ctx)
  if msg.dst == "catalog" and ctx.has("catalog-v2") then return "catalog-v2" end
end
"""

    def test_a_route_that_asks_the_registry_follows_it(self):
        c = self.peer(name="shop-ui")
        old = self.peer(register="catalog")
        for _ in range(3):
            req = c.request("catalog", action="get")
            _, got = old.recv()
            self.assertEqual(got["msg_id"], req["msg_id"])
        new = self.peer(register="catalog-v2")
        req = c.request("catalog", action="get")
        _, got = new.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        new.unregister("catalog-v2")
        req = c.request("catalog", action="get")
        _, got = old.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])


class ReloadTest(CacheCase):
    POLICY = 'function filter(msg) if msg.action == "a" then return false, "no a" end end\n'

    def test_a_new_version_decides_afresh(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        for _ in range(3):
            self.assertEqual(self.ask(c, svc, "a", expect="refused"), "no a")
            self.assertIsNone(self.ask(c, svc, "b"))
        with open(self.policy, "w") as f:
            f.write('function filter(msg) if msg.action == "b" then return false, "no b" end end\n')
        body = c.call_broker("reload_policy")
        self.assertEqual(body["payload"]["status"], "ok", body)
        self.assertIsNone(self.ask(c, svc, "a"))
        self.assertEqual(self.ask(c, svc, "b", expect="refused"), "no b")


if __name__ == "__main__":
    unittest.main()
