#!/usr/bin/python3
"""The seed's three-terminal demo: the broker, examples/python/echo_service.py
and examples/python/test_client.py, each its own process."""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402
from test_seed_snippet import SeedProcess  # noqa: E402

ECHO = os.path.join(bp.EXAMPLES, "echo_service.py")
CLIENT = os.path.join(bp.EXAMPLES, "test_client.py")


class DemoTest(bp.BrokerTestCase):
    def start_echo(self, *args, env=None):
        watcher = self.peer()  # an echo-service from an earlier test must be gone
        bp.wait_until(lambda: "echo-service" not in bp.services(watcher), timeout=2.0)
        echo = SeedProcess([bp.PYTHON, ECHO] + list(args),
                           env or bp.python_env(self.broker.endpoint))
        self.addCleanup(echo.stop)
        echo.wait_for("registered as echo-service")
        return echo

    def run_client(self, *args, endpoint=None, timeout=10):
        return subprocess.run([bp.PYTHON, CLIENT, "--endpoint", endpoint or self.broker.endpoint]
                              + list(args), capture_output=True, text=True, timeout=timeout,
                              env=bp.python_env(self.broker.endpoint))

    def test_client_gets_the_echo_and_exits_0(self):
        echo = self.start_echo("--endpoint", self.broker.endpoint)
        res = self.run_client()
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn('{"hello": "world"}', res.stdout)
        answer = json.loads(res.stdout.strip().splitlines()[-1])
        self.assertEqual(answer["type"], "response")
        self.assertEqual(answer["src"], "echo-service")
        self.assertEqual(answer["dst"], "test-client")
        self.assertEqual(answer["action"], "echo")
        self.assertEqual(answer["payload"], {"hello": "world"})
        echo.wait_for(answer["correlation_id"])  # the service printed a line for it

    def test_echo_service_takes_the_endpoint_from_the_environment(self):
        self.start_echo()  # no --endpoint: SMARTSHOP_ENDPOINT
        res = self.run_client("--payload", '{"n": [1, 2, 3]}')
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn('{"n": [1, 2, 3]}', res.stdout)

    def test_several_clients_in_a_row(self):
        self.start_echo()
        for i in range(3):
            res = self.run_client("--payload", json.dumps({"i": i}))
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            self.assertIn('{"i": %d}' % i, res.stdout)

    def test_client_without_echo_service_exits_1_with_the_error(self):
        res = self.run_client("--dst", "no-echo-here")
        self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
        self.assertIn("no_such_service", res.stderr)

    def test_client_without_broker_times_out_with_exit_1(self):
        ep = "tcp://127.0.0.1:%d" % bp.free_port()
        res = self.run_client("--timeout", "0.5", endpoint=ep)
        self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
        self.assertIn("no response", res.stderr)

    def test_echo_service_stops_cleanly_on_ctrl_c(self):
        echo = self.start_echo()
        echo.proc.send_signal(signal.SIGINT)
        self.assertEqual(echo.proc.wait(3), 0)
        self.assertNotIn("Traceback", "\n".join(echo.seen + [echo.lines.get() for _ in
                                                              range(echo.lines.qsize())]))
        watcher = self.peer()
        gone = bp.wait_until(lambda: "echo-service" not in bp.services(watcher), timeout=2.0)
        self.assertTrue(gone)


class MakeRunDefaultsDemoTest(DemoTest):
    """The same demo against a broker on `make run`'s defaults: the shipped
    policies/routing.lua and services/ loaded (services/echo.lua also serves
    "echo-service", so the client may be answered by either instance)."""

    @classmethod
    def setUpClass(cls):
        cls.broker = bp.Broker(core_only=False)

    def start_echo(self, *args, env=None):
        echo = SeedProcess([bp.PYTHON, ECHO] + list(args),
                           env or bp.python_env(self.broker.endpoint))
        self.addCleanup(echo.stop)
        echo.wait_for("registered as echo-service")
        return echo

    def test_client_gets_the_echo_and_exits_0(self):
        self.start_echo()
        for i in range(4):  # round-robin: the Python and the Lua instance both answer
            res = self.run_client("--payload", json.dumps({"hello": "world", "i": i}))
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            answer = json.loads(res.stdout.strip().splitlines()[-1])
            self.assertEqual(answer["payload"], {"hello": "world", "i": i})
            self.assertEqual(answer["src"], "echo-service")

    def test_echo_service_stops_cleanly_on_ctrl_c(self):
        echo = self.start_echo()
        echo.proc.send_signal(signal.SIGINT)
        self.assertEqual(echo.proc.wait(3), 0)

    def test_client_without_echo_service_exits_1_with_the_error(self):
        res = self.run_client("--dst", "no-echo-here")
        self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
        self.assertIn("no_such_service", res.stderr)


if __name__ == "__main__":
    bp.main()
