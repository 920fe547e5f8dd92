#!/usr/bin/python3
"""Item 8 of the hardening issue: a service with 1,000 bus.every(1) timers,
each spending its whole budget, stalled all routing for seconds, over and
over: the budget was per call, and nothing bounded one pass over a
service's timers. Now a service's handlers and timers share one budget per
pass (--lua-instruction-limit); what is left waits for the next pass, and
the event loop routes in between. A bystander's round trips (to a remote
peer and to a Lua service) stay under 100 ms while the hostile timers run,
every timer still gets its turn, and a busy service's messages keep their
order.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

ECHO = os.path.join(bp.SERVICES_DIR, "echo.lua")
STALL_LIMIT = 0.1 * bp.SLOW
# the machine is shared: one round trip may lose its core to another
# process; one over the limit is forgiven, none may take this long (before
# the pass budget, the storm held every round trip for 1-2 s)
HICCUP_LIMIT = 1.0 * bp.SLOW
TIMERS = 1000

HOSTILE = r'''
local ran = {}
for i = 1, %d do
  bus.every(1, function()
    ran[i] = true
    local x = 0
    while true do x = x + 1 end          -- its whole budget, every time
  end)
end
return {
  name = "timer-storm",
  on_request = function(msg)
    local n = 0
    for _ in pairs(ran) do n = n + 1 end
    return {ran = n}
  end,
}
''' % TIMERS

# each request spends about half a pass: a pass takes two, the rest wait
ORDERED = r'''
local seen = {}
return {
  name = "half-pass",
  on_request = function(msg)
    if msg.action == "seen" then return seen end
    local x = 0
    for i = 1, 25000 do x = x + i end     -- about half of the 200,000 below
    seen[#seen + 1] = msg.payload.n
    return {n = msg.payload.n}
  end,
}
'''


class PassBudgetTest(bp.LuaServicesTestCase):
    # a smaller budget than the default (one pass of the storm is then a
    # few ms, so the bound is met with margin on a loaded machine); before
    # the pass budget, one pass of the 1,000 timers took about a second
    EXTRA_ARGS = ("--lua-instruction-limit", "200000")

    @classmethod
    def make_services_dir(cls):
        d = bp.services_dir({"echo.lua": ECHO})
        for name, text in (("timer_storm.lua", HOSTILE), ("half_pass.lua", ORDERED)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d

    def test_bystanders_keep_their_round_trips(self):
        client = self.peer(name="pb-client")
        remote = self.peer(register="pb-remote")
        self.assertTrue(self.broker.wait_for_log(r"timer-storm loaded", 5.0 * bp.SLOW))
        time.sleep(0.2)                       # the storm is on
        remote_rtts, lua_rtts = [], []
        deadline = time.monotonic() + 2.0 * bp.SLOW
        i = 0
        while time.monotonic() < deadline:
            i += 1
            start = time.monotonic()
            m = client.request("pb-remote", "ping", payload=i)
            _, req = remote.recv(10.0 * bp.SLOW)
            remote.answer(req, payload={"pong": i})
            _, body = client.recv_answer(m["msg_id"], 10.0 * bp.SLOW)
            self.assertEqual(body.get("payload"), {"pong": i})
            remote_rtts.append(time.monotonic() - start)
            start = time.monotonic()
            m = client.request("echo-service", "echo", payload={"i": i})
            _, body = client.recv_answer(m["msg_id"], 10.0 * bp.SLOW)
            self.assertEqual(body.get("payload"), {"i": i})
            lua_rtts.append(time.monotonic() - start)
        sys.stderr.write("\n  %d round trips each; worst: remote %.1f ms, Lua %.1f ms\n"
                         % (i, max(remote_rtts) * 1e3, max(lua_rtts) * 1e3))
        for what, rtts in (("remote", remote_rtts), ("Lua", lua_rtts)):
            slow = [round(t * 1e3, 1) for t in rtts if t >= STALL_LIMIT]
            self.assertLessEqual(len(slow), 1, "%s round trips over %.0f ms: %s"
                                 % (what, STALL_LIMIT * 1e3, slow))
            self.assertLess(max(rtts), HICCUP_LIMIT, "%s round trip took %.3f s" % (what, max(rtts)))
        self.assertGreater(i, 10)
        self.assertAlive()

    def test_every_timer_gets_its_turn(self):
        client = self.peer(name="pb-turns")
        ran = 0
        deadline = time.monotonic() + 30.0 * bp.SLOW
        while time.monotonic() < deadline and ran < TIMERS:
            m = client.request("timer-storm", "count")
            _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
            self.assertEqual(body.get("type"), "response", bp.dump(body))
            ran = body["payload"]["ran"]
            time.sleep(0.2)
        self.assertEqual(ran, TIMERS)

    def test_a_busy_service_keeps_the_order_of_its_messages(self):
        client = self.peer(name="pb-order")
        ids = [client.request("half-pass", "work", payload={"n": n})["msg_id"] for n in range(12)]
        answers = []
        for msg_id in ids:
            _, body = client.recv_answer(msg_id, 10.0 * bp.SLOW)
            self.assertEqual(body.get("type"), "response", bp.dump(body))
            answers.append(body["payload"]["n"])
        self.assertEqual(answers, list(range(12)))
        m = client.request("half-pass", "seen")
        _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
        self.assertEqual(body.get("payload"), list(range(12)), bp.dump(body))


if __name__ == "__main__":
    bp.main()
