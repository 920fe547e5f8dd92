#!/usr/bin/python3
"""A hook by message type (docs/policies.md): filter, route and authorize
may each be a table of functions by message type; the broker calls the
one for a message's type and skips the types the table lacks, hook by
hook. A bad table stops the load like any error in the file. Fails on a
broker that takes hooks as functions only (it refuses such a policy)."""
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

POLICY = r"""
local function refuse(msg) return false, "filter saw a " .. msg.type end
-- callable, as smartshop.policy makes them: the broker reads the table raw
filter = setmetatable({ event = refuse }, { __call = function(_, msg) return refuse(msg) end })
route = { event = function(msg, ctx) error("route saw a " .. msg.type) end }
authorize = { response = function(msg, peer) return false, "authorize saw a " .. msg.type end }
"""


class HookTypesTest(bp.PolicyTestCase):
    POLICY = POLICY

    def test_hooks_run_only_for_the_types_declared(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=bp.new_id("svc"))
        req = c.request(svc.name, action="get")
        _, got = svc.recv()                       # no filter, route nor authorize
        self.assertEqual(got["msg_id"], req["msg_id"])
        ans = svc.answer(got, payload={"ok": True})
        body = self.expectError(svc, "denied", correlation_id=ans["msg_id"])
        self.assertEqual(body["payload"]["message"], "authorize saw a response")
        c.expect_nothing(0.1)
        ev = bp.msg("event", "shop-ui", svc.name, "changed", payload={})
        c.send(ev)
        body = self.expectError(c, "denied", correlation_id=ev["msg_id"])
        self.assertEqual(body["payload"]["message"], "filter saw a event")
        svc.expect_nothing(0.1)


BAD = {
    # name: (text, error)
    "unknown_type": ('filter = { reqest = function() end }\n', "filter: the keys .* not reqest"),
    "register_type": ('route = { register = function() end }\n', "route: the keys .* not register"),
    "not_a_function": ('authorize = { request = 5 }\n', "authorize.request must be a function"),
    "name_hook": ('on_register = { request = function() end }\n', "on_register must be a function, not a table"),
}


class BadHookTypesTest(unittest.TestCase):
    def test_a_bad_declaration_stops_the_start(self):
        tmp = tempfile.mkdtemp(prefix="smartshop-hooktypes-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for case, (text, error) in BAD.items():
            with self.subTest(case=case):
                path = os.path.join(tmp, case + ".lua")
                with open(path, "w") as f:
                    f.write(text)
                res = bp.run_broker_cli(["--endpoint", "tcp://127.0.0.1:%d" % bp.free_port(),
                                         "--services", "", "--policy", path])
                out = res.stdout + res.stderr
                self.assertEqual(res.returncode, 2, out)
                self.assertRegex(out, re.escape(path) + ": " + error)


if __name__ == "__main__":
    unittest.main()
