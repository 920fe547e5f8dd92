#!/usr/bin/python3
"""hook_types (docs/policies.md, "Hooks a message type does not need"): a
policy that declares the message types a hook looks at is not called for
the others, hook by hook; a bad declaration stops the load like any error
in the file. Fails on a broker that ignores the declaration: every hook
below refuses (or raises on) whatever reaches it."""
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

POLICY = r"""
hook_types = { filter = { "event" }, route = { "event" }, authorize = { "response" } }

function filter(msg) return false, "filter saw a " .. msg.type end
function route(msg, ctx) error("route saw a " .. msg.type) end
function authorize(msg, peer) return false, "authorize saw a " .. msg.type end
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
    "not_a_table": 'hook_types = 5\nfunction filter(msg) end\n',
    "unknown_type": 'hook_types = { filter = { "reqest" } }\nfunction filter(msg) end\n',
    "not_a_list": 'hook_types = { filter = "request" }\nfunction filter(msg) end\n',
}


class BadHookTypesTest(unittest.TestCase):
    def test_a_bad_declaration_stops_the_start(self):
        tmp = tempfile.mkdtemp(prefix="smartshop-hooktypes-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for case, text in BAD.items():
            with self.subTest(case=case):
                path = os.path.join(tmp, case + ".lua")
                with open(path, "w") as f:
                    f.write(text)
                res = bp.run_broker_cli(["--endpoint", "tcp://127.0.0.1:%d" % bp.free_port(),
                                         "--services", "", "--policy", path])
                out = res.stdout + res.stderr
                self.assertEqual(res.returncode, 2, out)
                self.assertRegex(out, re.escape(path) + ": hook_types ")


if __name__ == "__main__":
    unittest.main()
