#!/usr/bin/python3
"""The Lua config file (--config): endpoints, log_level, max_message_bytes
are honoured; command-line flags win over it; broken files exit 2."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def padded_ping(size):
    base = bp.dumps(bp.msg("request", "cfg-client", "broker", "ping", pad=""))
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


class ConfigFileTest(bp.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        pass  # each test runs its own broker

    @classmethod
    def tearDownClass(cls):
        pass

    def setUp(self):
        super().setUp()
        self._files = []
        self._brokers = []

    def tearDown(self):
        super().tearDown()
        for b in self._brokers:
            b.cleanup()
        for f in self._files:
            os.unlink(f)

    def write_config(self, text):
        fd, path = tempfile.mkstemp(prefix="smartshop-config-", suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self._files.append(path)
        return path

    def start(self, args, port, endpoint=False):
        b = bp.Broker(args=args, endpoint=endpoint, port=port)
        self._brokers.append(b)
        return b

    def config(self, port, log_level="debug", max_bytes=400, extra=""):
        return self.write_config(
            '-- smartshop broker test config\n'
            'endpoints = {"tcp://127.0.0.1:%d"}\n'
            'log_level = "%s"\n'
            'max_message_bytes = %d\n%s' % (port, log_level, max_bytes, extra))

    def ping_ok(self, endpoint, size=None):
        p = bp.Peer(endpoint)
        try:
            if size is None:
                return p.call_broker("ping", src="cfg-client")["type"] == "response"
            p.send(padded_ping(size))
            _, body = p.recv()
            return body
        finally:
            p.close()

    def test_config_endpoint_log_level_and_size_are_honoured(self):
        port = bp.free_port()
        ep = "tcp://127.0.0.1:%d" % port
        b = self.start(["--config", self.config(port)], port)
        self.assertTrue(self.ping_ok(ep))
        self.assertTrue(b.wait_for_log(r" DEBUG ", 2.0), "log_level=debug not honoured:\n"
                        + b.log_text())
        body = self.ping_ok(ep, size=401)
        self.assertEqual(bp.error_code(body), "too_large", bp.dump(body))
        body = self.ping_ok(ep, size=400)
        self.assertEqual(body["type"], "response", bp.dump(body))

    def test_flags_win_over_the_config_file(self):
        cfg_port, flag_port = bp.free_port(), bp.free_port()
        flag_ep = "tcp://127.0.0.1:%d" % flag_port
        b = self.start(["--config", self.config(cfg_port), "--endpoint", flag_ep,
                        "--log-level", "info", "--max-message-bytes", "2000"], flag_port)
        self.assertTrue(self.ping_ok(flag_ep))
        body = self.ping_ok(flag_ep, size=1500)
        self.assertEqual(body["type"], "response", "--max-message-bytes did not win: "
                         + bp.dump(body))
        body = self.ping_ok(flag_ep, size=2001)
        self.assertEqual(bp.error_code(body), "too_large")
        self.assertNotIn(" DEBUG ", b.log_text(), "--log-level info did not win")
        self.assertFalse(bp.port_accepts(cfg_port),
                         "config endpoint bound although --endpoint was given")

    def test_config_file_may_list_several_endpoints(self):
        p1, p2 = bp.free_port(), bp.free_port()
        path = self.write_config('endpoints = {"tcp://127.0.0.1:%d", "tcp://127.0.0.1:%d"}\n'
                                 % (p1, p2))
        self.start(["--config", path], p1)
        for port in (p1, p2):
            self.assertTrue(self.ping_ok("tcp://127.0.0.1:%d" % port))

    def test_config_file_with_a_lua_error_exits_2_naming_the_file(self):
        path = self.write_config('endpoints = {"tcp://127.0.0.1:1"\nlog_level = \n')
        res = bp.run_broker_cli(["--config", path])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(path, res.stderr)

    def test_config_file_with_a_wrong_type_exits_2(self):
        port = bp.free_port()
        for bad in ('max_message_bytes = "big"', 'log_level = "shouty"', 'endpoints = 5'):
            with self.subTest(setting=bad):
                path = self.write_config('endpoints = {"tcp://127.0.0.1:%d"}\n%s\n' % (port, bad))
                res = bp.run_broker_cli(["--config", path])
                self.assertEqual(res.returncode, 2, res.stderr)
                self.assertTrue(res.stderr.strip())

    def test_missing_config_file_exits_2_naming_it(self):
        path = os.path.join(tempfile.gettempdir(), "no-such-config-%s.lua" % bp.new_id())
        res = bp.run_broker_cli(["--config", path])
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertIn(path, res.stderr)
        self.assertEqual(len(res.stderr.strip().splitlines()), 1, res.stderr)

    def test_config_file_request_timeout(self):
        port = bp.free_port()
        ep = "tcp://127.0.0.1:%d" % port
        path = self.config(port, log_level="info", max_bytes=4096,
                           extra="request_timeout_ms = 200\n")
        self.start(["--config", path], port)
        svc, client = bp.Peer(ep), bp.Peer(ep)
        try:
            svc.register("cfg-sleepy")
            req = client.request("cfg-sleepy", "nap", src="cfg-client")
            svc.recv()
            _, body = client.recv(2.0)
            self.assertEqual(bp.error_code(body), "timeout", bp.dump(body))
            self.assertEqual(body["correlation_id"], req["msg_id"])
        finally:
            svc.close()
            client.close()


if __name__ == "__main__":
    bp.main()
