#!/usr/bin/python3
"""filter() and route() of one request run in one call into the policy
(policy_filter_route): each hook keeps a budget of its own, a failure is
told as the hook's that failed, a rewrite is routed as the new message,
and route() sees what it saw before (requests to services only, never a
duplicate msg_id, nor an event with a topic)."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

LIMIT = 100000

POLICY = r"""
local function spin(n) local x = 0 for i = 1, n do x = x + i end return x end
routed = 0

function filter(msg)
  if msg.action == "spin" then spin(%(spin)d) end
  if msg.action == "boom_filter" then error("filter boom") end
  if msg.action == "rewrite" then
    local t = msg:table()
    t.dst = "other-svc"
    return t
  end
end

function route(msg, ctx)
  routed = routed + 1
  if msg.action == "spin" then spin(%(spin)d) end
  if msg.action == "boom_route" then error("route boom") end
  if msg.action == "count" then log.warn("ROUTED " .. routed) end
  if msg.dst == "other-svc" and msg.action == "rewrite" then return "third-svc" end
end
""" % {"spin": LIMIT * 3 // 10}  # 2 instructions a turn: 3/5 of a budget each, 6/5 together


class FilterRouteTest(bp.PolicyTestCase):
    POLICY = POLICY
    EXTRA_ARGS = ("--lua-instruction-limit", str(LIMIT))

    def setUp(self):
        super().setUp()
        self.client = self.peer(name="shop-ui")
        self.svc = self.peer(register=bp.new_id("svc"))

    def test_each_hook_has_a_budget_of_its_own(self):
        req = self.client.request(self.svc.name, action="spin")
        _, got = self.svc.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])

    def test_a_failure_is_the_failing_hook_s(self):
        for action, hook in (("boom_route", "route"), ("boom_filter", "filter")):
            with self.subTest(hook=hook):
                start = len(self.broker.log_text())
                req = self.client.request(self.svc.name, action=action)
                body = self.expectError(self.client, "policy_error", correlation_id=req["msg_id"])
                self.assertIn("the policy's %s hook failed" % hook, body["payload"]["message"])
                log = self.broker.wait_for_log(r"%s\(\) failed: .*%s boom" % (hook, hook), start=start)
                self.assertTrue(log)
                self.svc.expect_nothing(0.05)

    def test_a_rewrite_is_routed_as_the_new_message(self):
        third = self.peer(register="third-svc")
        req = self.client.request(self.svc.name, action="rewrite")
        _, got = third.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        self.assertEqual(got["dst"], "other-svc")

    def test_route_is_not_asked_about_a_duplicate(self):
        req = bp.msg("request", "shop-ui", self.svc.name, "count")
        self.client.send(req)
        self.svc.recv()
        start = len(self.broker.log_text())
        self.client.send(req)                    # the same msg_id, still in flight
        self.expectError(self.client, "duplicate_msg_id", correlation_id=req["msg_id"])
        req2 = self.client.request(self.svc.name, action="count")
        self.svc.recv()
        log = self.broker.wait_for_log(r"ROUTED", start=start)
        counts = [int(n) for n in re.findall(r"ROUTED (\d+)", self.broker.log_text()[start:])]
        self.assertEqual(len(counts), 1, counts)
        first = [int(n) for n in re.findall(r"ROUTED (\d+)", self.broker.log_text()[:start])]
        self.assertEqual(counts[0], first[-1] + 1, "route() ran for the duplicate")


if __name__ == "__main__":
    import unittest
    unittest.main()
