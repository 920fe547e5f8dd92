#!/usr/bin/python3
"""The broker's side of smartshop-broker.service (Type=notify), without
systemd: the sd_notify datagrams on $NOTIFY_SOCKET (READY=1 only once the
endpoint accepts connections, RELOADING=1/READY=1 around a SIGHUP reload,
STOPPING=1 on SIGTERM) and journal-style "<N>" priority prefixes when
$JOURNAL_STREAM is set.

    /usr/bin/python3 tests/ops/test_notify.py
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.sock_path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.policy = os.path.join(self.dir.name, "routing.lua")
        with open(self.policy, "w") as f:
            f.write("-- no hooks\n")
        self.port = bp.free_port()
        self.log_path = os.path.join(self.dir.name, "broker.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = self.sock_path
        env["JOURNAL_STREAM"] = "8:12345"           # as systemd sets it for the journal
        self.proc = subprocess.Popen(
            [bp.broker_path(), "--endpoint", "tcp://127.0.0.1:%d" % self.port,
             "--policy", self.policy, "--services", ""],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, env=env)

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.sock.close()
        self.dir.cleanup()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def notification(self, timeout=10.0):
        """The next datagram as {key: value}, or None after `timeout` s."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def wait_for(self, key, timeout=10.0):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            n = self.notification(deadline - time.monotonic())
            if n is None:
                break
            seen.append(n)
            if key in n:
                return n, seen
        self.fail("no %s from the broker; got %r; log:\n%s" % (key, seen, self.log_text()))

    def test_ready_reload_stopping(self):
        n, _ = self.wait_for("READY")
        self.assertEqual(n["READY"], "1")
        # Type=notify: `systemctl start` returns now, so the port must accept
        self.assertTrue(bp.port_accepts(self.port), "READY=1 before the endpoint was bound")
        self.assertIn("127.0.0.1:%d" % self.port, n.get("STATUS", ""))

        self.proc.send_signal(signal.SIGHUP)          # systemctl reload
        n, seen = self.wait_for("RELOADING")
        self.assertEqual(n["RELOADING"], "1")
        n, _ = self.wait_for("READY")
        self.assertEqual(n["READY"], "1")

        self.proc.send_signal(signal.SIGTERM)         # systemctl stop
        n, _ = self.wait_for("STOPPING")
        self.assertEqual(n["STOPPING"], "1")
        self.assertEqual(self.proc.wait(10), 0, self.log_text())

        # under the journal: "<priority>text", no timestamp of its own
        lines = [l for l in self.log_text().splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[0-7]>\S", "not a journal line: %r" % line)
        self.assertTrue(any(l.startswith("<6>") and "ready" in l for l in lines), lines)


if __name__ == "__main__":
    unittest.main(verbosity=2)
