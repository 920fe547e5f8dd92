#!/usr/bin/python3
"""Logs: one line per event on stderr, "<timestamp> <LEVEL> <text>", and
quiet at info level under load (no line per routed message)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

N = 1000


class LoggingTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--log-level", "info")

    def test_every_line_has_timestamp_level_text(self):
        p = self.peer(register="fmt-svc")
        p.send(b"{bad")
        p.recv()
        lines = self.broker.log_lines()
        self.assertTrue(lines, "the broker logged nothing at all")
        for line in lines:
            self.assertRegex(line, bp.LOG_LINE_RE)

    def test_ready_line_is_logged(self):
        self.assertRegex(self.broker.log_text(), bp.READY_RE)
        ready = [l for l in self.broker.log_lines() if bp.READY_RE.search(l)]
        self.assertEqual(len(ready), 1, ready)

    def test_no_line_per_routed_message_at_info(self):
        svc = self.peer(register="busy-svc")
        listener = self.peer(register="busy-listener")
        client = self.peer()
        before = len(self.broker.log_lines())
        for i in range(N):
            req = client.request("busy-svc", "work", src="busy-client", payload=i)
            _, got = svc.recv()
            svc.answer(got)
            client.recv_answer(req["msg_id"])
            client.send(bp.msg("event", "busy-client", "busy-listener", "tick", payload=i))
            listener.recv()
        for i in range(100):
            client.send(bp.msg("event", "busy-client", "broadcast", "tick", payload=i))
        for i in range(100):
            svc.recv()
            listener.recv()
        self.assertAlive()
        new = self.broker.log_lines()[before:]
        self.assertLess(len(new), 10, "%d log lines for %d routed messages at info:\n%s"
                        % (len(new), 3 * N + 200, "\n".join(new[:20])))


if __name__ == "__main__":
    bp.main()
