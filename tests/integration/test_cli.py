#!/usr/bin/python3
"""The command line: --help, --version, bad flags (exit 2, one line), an
endpoint in use (exit 1, names it), several endpoints, --log-level."""
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class CliTest(bp.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        pass  # each test runs its own broker

    @classmethod
    def tearDownClass(cls):
        pass

    def assertOneLineError(self, res, *needles):
        err = res.stderr.strip()
        self.assertTrue(err, "no error message on stderr (stdout: %r)" % res.stdout)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "expected a one-line error, got:\n%s" % err)
        for n in needles:
            self.assertIn(n, err)

    def test_help_prints_usage_and_exits_0(self):
        res = bp.run_broker_cli(["--help"])
        self.assertEqual(res.returncode, 0, res.stderr)
        out = res.stdout + res.stderr
        self.assertIn("usage", out.lower())
        for flag in ("--endpoint", "--policy", "--services", "--config", "--log-level",
                     "--max-message-bytes", "--request-timeout-ms", "--help", "--version"):
            self.assertIn(flag, out, "--help does not mention %s" % flag)

    def test_help_names_every_flag(self):
        # every long option the broker takes (src/config.c) is documented
        with open(os.path.join(bp.REPO_ROOT, "src", "config.c")) as f:
            flags = re.findall(r'\{"([a-z][a-z0-9-]+)", (?:required|no)_argument', f.read())
        self.assertGreater(len(flags), 20)
        out = bp.run_broker_cli(["--help"]).stdout
        missing = [f for f in flags if "--" + f not in out]
        self.assertEqual(missing, [], "--help does not mention these flags")

    def test_version_prints_a_version_and_exits_0(self):
        res = bp.run_broker_cli(["--version"])
        self.assertEqual(res.returncode, 0, res.stderr)
        out = (res.stdout + res.stderr).strip()
        self.assertRegex(out, r"\d+\.\d+")
        self.assertLessEqual(len(out.splitlines()), 3, out)

    def test_unknown_flag_exits_2_with_one_line(self):
        res = bp.run_broker_cli(["--bogus-flag"])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertOneLineError(res, "--bogus-flag")

    def test_stray_argument_exits_2(self):
        res = bp.run_broker_cli(["surprise"])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertOneLineError(res, "surprise")

    def test_flag_missing_its_value_exits_2(self):
        res = bp.run_broker_cli(["--endpoint"])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertOneLineError(res, "--endpoint")

    def test_bad_log_level_exits_2(self):
        res = bp.run_broker_cli(["--log-level", "chatty", "--endpoint",
                                 "tcp://127.0.0.1:%d" % bp.free_port()])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertOneLineError(res, "chatty")

    def test_bad_numbers_exit_2(self):
        for flag, value in (("--max-message-bytes", "lots"), ("--max-message-bytes", "-5"),
                            ("--max-message-bytes", "0"), ("--request-timeout-ms", "soon"),
                            ("--request-timeout-ms", "0"), ("--request-timeout-ms", "300001")):
            with self.subTest(flag=flag, value=value):
                res = bp.run_broker_cli([flag, value, "--endpoint",
                                         "tcp://127.0.0.1:%d" % bp.free_port()])
                self.assertEqual(res.returncode, 2, res.stderr)
                self.assertOneLineError(res, flag)

    def test_bad_endpoint_syntax_exits_with_a_message(self):
        res = bp.run_broker_cli(["--endpoint", "nonsense://x", "--policy", "", "--services", ""])
        self.assertIn(res.returncode, (1, 2), res.stderr)
        self.assertIn("nonsense://x", res.stderr)

    def test_endpoint_in_use_exits_1_naming_it(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        ep = "tcp://127.0.0.1:%d" % port
        try:
            res = bp.run_broker_cli(["--endpoint", ep, "--policy", "", "--services", ""])
        finally:
            holder.close()
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn(ep, res.stderr)
        self.assertRegex(res.stderr, r"\b(ss|lsof|fuser|netstat)\b",
                         "no hint on how to find who holds the port")
        self.assertNotIn("ready", res.stderr.replace("already", ""))

    def test_endpoint_in_use_by_another_broker(self):
        with bp.Broker() as first:
            res = bp.run_broker_cli(["--endpoint", first.endpoint, "--policy", "",
                                     "--services", ""])
            self.assertEqual(res.returncode, 1, res.stderr)
            self.assertIn(first.endpoint, res.stderr)
            self.assertTrue(first.alive())

    def test_missing_config_file_exits_2_naming_it(self):
        path = "/nonexistent/smartshop-%s.lua" % bp.new_id()
        res = bp.run_broker_cli(["--config", path])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertOneLineError(res, path)

    def test_missing_policy_file_exits_2_naming_it(self):
        path = "/nonexistent/policy-%s.lua" % bp.new_id()
        res = bp.run_broker_cli(["--policy", path, "--services", "", "--endpoint",
                                 "tcp://127.0.0.1:%d" % bp.free_port()])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(path, res.stderr)

    def test_several_endpoints_are_all_bound(self):
        p1, p2 = bp.free_port(), bp.free_port()
        ipc = "ipc:///tmp/smartshop-test-%s.sock" % bp.new_id()
        b = bp.Broker(args=["--endpoint", "tcp://127.0.0.1:%d" % p2, "--endpoint", ipc],
                      port=p1)
        try:
            for ep in (b.endpoint, "tcp://127.0.0.1:%d" % p2, ipc):
                with self.subTest(endpoint=ep):
                    p = bp.Peer(ep)
                    try:
                        body = p.call_broker("ping", src="multi-ep")
                        self.assertEqual(body["type"], "response")
                    finally:
                        p.close()
        finally:
            self.assertEqual(b.stop(), 0, b.log_text())
            b.cleanup()
            try:
                os.unlink(ipc[len("ipc://"):])
            except OSError:
                pass

    def test_peers_on_different_endpoints_reach_each_other(self):
        p2 = bp.free_port()
        ep2 = "tcp://127.0.0.1:%d" % p2
        with bp.Broker(args=["--endpoint", ep2]) as b:
            svc, client = bp.Peer(b.endpoint), bp.Peer(ep2)
            try:
                svc.register("across")
                req = client.request("across", "do", src="client-x")
                _, got = svc.recv()
                self.assertEqual(got["msg_id"], req["msg_id"])
            finally:
                svc.close()
                client.close()

    def test_empty_policy_and_services_mean_none(self):
        with bp.Broker() as b:  # the fixture passes --policy "" --services ""
            p = b.peer()
            try:
                self.assertEqual(bp.services(p), {})
            finally:
                p.close()

    def test_log_level_debug_logs_more_than_info(self):
        with bp.Broker(log_level="debug") as dbg, bp.Broker(log_level="info") as inf:
            for b in (dbg, inf):
                p = b.peer()
                try:
                    p.register("chatty-svc")
                    p.call_broker("ping", src="chatty-svc")
                    p.send(b"{not json")  # an error reply: an event worth a debug line
                    p.recv()
                finally:
                    p.close()
            self.assertTrue(dbg.wait_for_log(r" DEBUG ", 2.0), dbg.log_text())
            self.assertNotIn(" DEBUG ", inf.log_text())

    def test_log_level_error_is_quiet(self):
        with bp.Broker(log_level="error") as b:
            p = b.peer()
            try:
                p.register("quiet-svc")
                p.send(b"{bad json")
                p.recv()
            finally:
                p.close()
            for line in b.log_lines():
                self.assertNotRegex(line, r" (INFO|DEBUG) ", "logged below error: " + line)


if __name__ == "__main__":
    bp.main()
