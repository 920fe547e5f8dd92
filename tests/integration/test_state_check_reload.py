#!/usr/bin/python3
"""smartshop-broker --check (like nginx -t), and SIGHUP / reload_config.

--check reads the config, loads the policy in its sandbox, compiles the
services and reads the CURVE files, and needs no Lua tools: exit 0 when
all is good, 2 with the file and line of what is not. SIGHUP and the
broker action reload_config re-read the config file: what may change
live does (log level, limits, timeouts, the allow list), and the log line
names what needs a restart.
"""
import os
import shutil
import signal
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

SLOW = bp.SLOW


class CheckTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smartshop-check-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, *args):
        # PATH without any directory that could hold lua or luac
        env_path = os.environ.get("PATH")
        os.environ["PATH"] = "/nonexistent"
        try:
            return bp.run_broker_cli(["--check"] + list(args), timeout=10 * SLOW, cwd=self.dir)
        finally:
            os.environ["PATH"] = env_path

    def test_good_config_and_policy(self):
        policy = self.write("routing.lua", "function route(msg, ctx) return nil end\n")
        conf = self.write("broker.lua", 'policy = "%s"\nservices = ""\nlog_level = "warn"\n' % policy)
        out = self.check("--config", conf)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("policy %s: ok (hooks: route" % policy, out.stdout)
        self.assertIn("the configuration is good", out.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "state")), "--check wrote state")

    def test_broken_policy_names_file_and_line(self):
        policy = self.write("routing.lua", "function route(msg)\n  return nil\n")
        out = self.check("--policy", policy, "--services", "")
        self.assertEqual(out.returncode, 2)
        self.assertRegex(out.stderr, r"routing\.lua:\d+:")
        self.assertIn("would not start", out.stderr)

    def test_bad_config_key(self):
        conf = self.write("broker.lua", "max_mesage_bytes = 10\n")
        out = self.check("--config", conf)
        self.assertEqual(out.returncode, 2)
        self.assertIn("unknown setting 'max_mesage_bytes'", out.stderr)

    def test_broken_service_file(self):
        services = os.path.join(self.dir, "services")
        os.mkdir(services)
        self.write("services/bad.lua", "service = {\n")
        out = self.check("--policy", "", "--services", services)
        self.assertEqual(out.returncode, 2)
        self.assertRegex(out.stderr, r"bad\.lua:\d+:")


class ReloadTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smartshop-reload-")
        self.conf = os.path.join(self.dir, "broker.lua")
        self.port = bp.free_port()
        self.write_conf('log_level = "info"\nmax_message_bytes = 65536\n'
                        'endpoints = { "tcp://127.0.0.1:%d" }\n' % self.port)
        self.b = bp.Broker(args=["--config", self.conf], endpoint=False, port=self.port)
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            p.close()
        code = self.b.stop()
        log = self.b.log_text()
        self.b.cleanup()
        self.assertEqual(code, 0, log)
        self.assertNotRegex(log, r"Sanitizer|runtime error")
        shutil.rmtree(self.dir, ignore_errors=True)

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def peer(self):
        p = bp.Peer("tcp://127.0.0.1:%d" % self.port, name="op")
        self.peers.append(p)
        return p

    def too_large(self, p, size):
        p.send(bp.msg("request", "op", "nobody", "x", payload="y" * size))
        _, body = p.recv(3 * SLOW)
        return bp.error_code(body) == "too_large"

    def test_sighup_applies_live_settings_and_names_the_rest(self):
        p = self.peer()
        self.assertFalse(self.too_large(p, 2000))
        start = len(self.b.log_text())
        self.write_conf('log_level = "debug"\nmax_message_bytes = 1024\n'
                        'endpoints = { "tcp://127.0.0.1:%d" }\n' % bp.free_port())
        self.b.send_signal(signal.SIGHUP)
        m = self.b.wait_for_log(r"config .*broker\.lua reloaded: applied (.*); needs a restart "
                                r"to change: (.*)", 5 * SLOW, start)
        self.assertIsNotNone(m, self.b.log_text()[start:])
        self.assertIn("log_level", m.group(1))
        self.assertIn("max_message_bytes", m.group(1))
        self.assertIn("endpoints", m.group(2))
        self.assertTrue(self.too_large(p, 2000), "max_message_bytes did not change live")
        self.assertIsNotNone(self.b.wait_for_log(r"DEBUG", 3 * SLOW, start))   # log level live
        self.assertTrue(self.b.alive())

    def test_reload_config_action_and_a_bad_file(self):
        p = self.peer()
        self.write_conf('log_level = "warn"\nmax_message_bytes = 65536\n'
                        'endpoints = { "tcp://127.0.0.1:%d" }\nrequest_timeout_ms = 1234\n'
                        % self.port)
        body = p.call_broker("reload_config", src="op")["payload"]
        self.assertEqual(body["status"], "ok", body)
        self.assertEqual(sorted(body["applied"]), ["log_level", "request_timeout_ms"])
        self.assertEqual(body["needs_restart"], [])
        self.write_conf('log_level = "loud"\n')
        body = p.call_broker("reload_config", src="op")["payload"]
        self.assertEqual(body["status"], "error", body)
        self.assertIn("log_level", body["message"])
        self.assertRegex(self.b.log_text(), r"config .* refused, the running settings stay")
        self.assertEqual(p.call_broker("ping", src="op")["payload"]["status"], "ok")


if __name__ == "__main__":
    unittest.main()
