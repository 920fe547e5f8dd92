#!/usr/bin/python3
"""The policy at start: a broken policy stops the start with exit 2 and the
error (file and line); a missing explicit --policy file too; a missing
default policies/routing.lua is no error, and it is loaded when it appears."""
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

BROKEN = {
    # name: (text, line Lua reports, error)
    "syntax": ("function filter(msg)\n  return 1 +\nend\n", 3, "unexpected symbol"),
    "load_error": ("local cfg = nil\nlocal x = cfg.limit\n", 2, "attempt to index a nil value"),
    "endless_at_load": ("local n = 0\nwhile true do n = n + 1 end\n", None,
                        "instruction budget exhausted"),
    "hook_not_a_function": ("filter = 42\n", None, "filter must be a function"),
}

DENY_ALL = 'function filter(msg)\n  return false, "no entry"\nend\n'


class PolicyStartTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="smartshop-policy-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_with(self, text, name="policy.lua"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        port = bp.free_port()
        return path, bp.run_broker_cli(["--endpoint", "tcp://127.0.0.1:%d" % port,
                                        "--services", "", "--policy", path])

    def test_broken_policy_at_start_exits_2_naming_file_and_line(self):
        for case, (text, line, error) in BROKEN.items():
            with self.subTest(case=case):
                path, res = self.run_with(text, case + ".lua")
                out = res.stdout + res.stderr
                self.assertEqual(res.returncode, 2, out)
                where = re.escape(path) + (":%d:" % line if line else ":")
                self.assertRegex(out, where + " .*" + error)
                self.assertNotRegex(out, r"\bready\b", "it must not start routing")

    def test_missing_explicit_policy_exits_2(self):
        res = bp.run_broker_cli(["--endpoint", "tcp://127.0.0.1:%d" % bp.free_port(),
                                 "--services", "",
                                 "--policy", os.path.join(self.tmp, "nope.lua")])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn("nope.lua", res.stderr)

    def test_good_policy_is_logged_with_its_hooks(self):
        path = os.path.join(self.tmp, "policy.lua")
        with open(path, "w") as f:
            f.write(DENY_ALL + "function on_register(name, peer) end\n")
        with bp.Broker(args=["--policy", path]) as b:
            self.assertRegex(b.log_text(), r"INFO +policy %s loaded \(hooks: filter on_register\)"
                             % re.escape(path))

    def test_missing_default_policy_is_loaded_when_it_appears(self):
        os.mkdir(os.path.join(self.tmp, "policies"))
        default = os.path.join(self.tmp, "policies", "routing.lua")
        with bp.Broker(core_only=False, args=["--services", ""], cwd=self.tmp) as b:
            with b.peer(name="shop-ui") as c:
                req = c.request("nobody")
                _, body = c.recv_answer(req["msg_id"])
                self.assertEqual(bp.error_code(body), "no_such_service", bp.dump(body))
                with open(default, "w") as f:
                    f.write(DENY_ALL)
                self.assertTrue(b.wait_for_log(r"policy policies/routing.lua loaded", 2.0),
                                b.log_text())
                req = c.request("nobody")
                _, body = c.recv_answer(req["msg_id"])
                self.assertEqual(bp.error_code(body), "denied", bp.dump(body))
                self.assertEqual(body["payload"]["message"], "no entry")
            self.assertTrue(b.alive())


if __name__ == "__main__":
    bp.main()
