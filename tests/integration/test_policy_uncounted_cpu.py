#!/usr/bin/python3
"""Containment where the instruction count does not look: Lua runs no count
hook inside a C function (a pattern match that backtracks without end) or
inside a __gc finalizer (Lua 5.4 turns hooks off there). A policy must
still not be able to stall the broker: the message gets an error, other
traffic flows, a reload and a stop still work."""
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

PATTERN = """\
function filter(msg)
  if msg.action == "pattern" then
    -- backtracks for ages inside string.find (C): no VM instruction to count
    local found = string.rep("a", 3000):find(".-.-.-.-b")
    return false, "pattern done: " .. tostring(found)
  end
end
"""

GC_IN_HOOK = """\
function filter(msg)
  if msg.action == "gc" then
    for _ = 1, 10 do
      setmetatable({}, { __gc = function() while true do end end })
    end
    local garbage = {}
    for i = 1, 50000 do garbage[i % 100 + 1] = { i } end   -- makes the collector run
    return false, "made garbage"
  end
end
"""

GC_AT_CLOSE = """\
-- a finalizer that only runs when the state is closed (reload, stop)
KEEP = setmetatable({}, { __gc = function() while true do end end })
function filter(msg) end
"""


class UncountedCpuTest(bp.FreshBrokerTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = bp.policy_dir()[0]
        self.b = None

    def tearDown(self):
        bp.BrokerTestCase.tearDown(self)  # not FreshBrokerTestCase's: a stuck broker is expected
        if self.b:
            self.b.kill()                   # a stuck broker ignores SIGTERM
            self.b.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, text):
        """Starts a broker on `text`; None if it refused the policy at start (exit 2)."""
        path = os.path.join(self.tmp, "policy.lua")
        with open(path, "w") as f:
            f.write(text)
        try:
            self.b = bp.Broker(args=["--policy", path, "--lua-memory-limit", str(8 << 20)])
        except AssertionError as e:
            self.assertIn("exited with 2", str(e))
            return None
        return self.b

    def assertResponsive(self, client, echo):
        req = client.request("echo", action="plain")
        frames = echo.recv_raw(2.0)
        self.assertIsNotNone(frames, "the broker is stuck:\n" + self.b.log_text())
        echo.answer(bp.loads(frames[-1]))
        client.recv_answer(req["msg_id"])

    def assertTriggerContained(self, action):
        echo = self.peer(register="echo")
        client = self.peer(name="shop-ui")
        t0 = time.monotonic()
        req = client.request("echo", action=action)
        frames = client.recv_raw(2.0)
        self.assertIsNotNone(frames, "no answer within 2 s: the hook stalled the broker")
        body = bp.loads(frames[-1])
        self.assertEqual(body.get("correlation_id"), req["msg_id"], bp.dump(body))
        self.assertIn(bp.error_code(body), ("policy_error", "denied"), bp.dump(body))
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertResponsive(client, echo)
        return client, echo

    def assertReloadsAndStops(self, client):
        body = client.call_broker("reload_policy", timeout=2.0)
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.b.send_signal(signal.SIGTERM)
        self.assertEqual(self.b.wait(3.0), 0, "no clean stop:\n" + self.b.log_text())

    def test_backtracking_pattern(self):
        self.start(PATTERN)
        client, _ = self.assertTriggerContained("pattern")
        self.assertReloadsAndStops(client)

    def test_endless_finalizer_during_a_hook(self):
        if not self.start(GC_IN_HOOK):
            return
        client, _ = self.assertTriggerContained("gc")
        self.assertReloadsAndStops(client)

    def test_endless_finalizer_when_the_state_is_closed(self):
        if not self.start(GC_AT_CLOSE):
            return
        client = self.peer(name="shop-ui")
        self.assertReloadsAndStops(client)


if __name__ == "__main__":
    bp.main()
