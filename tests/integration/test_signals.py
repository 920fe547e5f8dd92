#!/usr/bin/python3
"""SIGTERM and SIGINT stop the broker cleanly (exit 0, a log line), with the
graceful stop of D5: in-flight requests get the grace period, new ones and
leftovers get shutting_down."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class SignalTest(bp.FreshBrokerTestCase):
    """Each test runs its own broker, self.b, and stops it with a signal."""

    def setUp(self):
        super().setUp()
        self.b = bp.Broker(args=self.GRACE_ARGS.get(self._testMethodName, ()))

    def tearDown(self):
        # the tests stop the broker themselves: no "still alive" check here
        bp.BrokerTestCase.tearDown(self)
        self.b.cleanup()

    def assertStopsCleanly(self, signum, within=3.0):
        before = len(self.b.log_lines())
        p = self.peer(register="bystander")
        p.call_broker("ping", src="bystander")
        t0 = time.monotonic()
        self.b.send_signal(signum)
        code = self.b.wait(within + 2)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(code, "broker still running after %s:\n%s"
                             % (signum.name, self.b.log_text()))
        self.assertEqual(code, 0, self.b.log_text())
        self.assertLess(elapsed, within, "slow stop with nothing in flight: %.2f s" % elapsed)
        lines = self.b.log_lines()
        self.assertGreater(len(lines), before, "no log line about stopping")
        self.assertTrue(any(bp.LOG_LINE_RE.match(l) for l in lines[before:]), lines[before:])

    def test_sigterm_exits_0_with_a_log_line(self):
        self.assertStopsCleanly(signal.SIGTERM)

    def test_sigint_exits_0_with_a_log_line(self):
        self.assertStopsCleanly(signal.SIGINT)

    # The default grace period (2000 ms) is checked by the last test; these
    # only need some grace, so they use a short one.
    GRACE_ARGS = {
        "test_in_flight_request_answered_during_grace_is_delivered":
            ("--shutdown-grace-ms", "1000"),
        "test_new_request_during_grace_gets_shutting_down": ("--shutdown-grace-ms", "1000"),
        "test_peer_connecting_during_grace_gets_shutting_down": ("--shutdown-grace-ms", "1000"),
    }

    def test_in_flight_request_answered_during_grace_is_delivered(self):
        svc = self.peer(register="graceful-svc")
        client = self.peer()
        req = client.request("graceful-svc", "do", src="client-a")
        _, got = svc.recv()
        self.b.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        self.assertTrue(self.b.alive(), "broker did not wait for the request in flight")
        svc.answer(got, payload="made it")
        _, body = client.recv_answer(req["msg_id"])
        self.assertEqual(body["payload"], "made it")
        self.assertEqual(self.b.wait(3), 0, self.b.log_text())

    def test_new_request_during_grace_gets_shutting_down(self):
        svc = self.peer(register="graceful-svc")
        client = self.peer()
        client.request("graceful-svc", "do", src="client-b")  # keeps the broker in grace
        svc.recv()
        self.b.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        late = client.request("graceful-svc", "do", src="client-b")
        _, body = client.recv_answer(late["msg_id"])
        self.assertError(body, "shutting_down", correlation_id=late["msg_id"])

    def test_peer_connecting_during_grace_gets_shutting_down(self):
        svc = self.peer(register="graceful-svc")
        self.peer().request("graceful-svc", "do", src="client-d")  # keeps the broker in grace
        svc.recv()
        self.b.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        newcomer = self.peer()
        late = newcomer.request("graceful-svc", "do", src="newcomer")
        _, body = newcomer.recv_answer(late["msg_id"])
        self.assertError(body, "shutting_down", correlation_id=late["msg_id"])

    def test_unanswered_request_gets_shutting_down_after_grace(self):
        svc = self.peer(register="stuck-svc")
        client = self.peer()
        req = client.request("stuck-svc", "do", src="client-c")
        svc.recv()
        t0 = time.monotonic()
        self.b.send_signal(signal.SIGTERM)
        _, body = client.recv_answer(req["msg_id"], timeout=4)
        elapsed = time.monotonic() - t0
        self.assertError(body, "shutting_down", correlation_id=req["msg_id"])
        self.assertGreaterEqual(elapsed, 1.5, "grace period cut short: %.2f s" % elapsed)
        self.assertEqual(self.b.wait(3), 0, self.b.log_text())


if __name__ == "__main__":
    bp.main()
