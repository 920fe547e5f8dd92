#!/usr/bin/python3
"""Routing errors that need the real socket: the three-frame shape of an
error answer (F2), unknown_action from the broker's own service (B1), and
busy from a full outbound queue (D4). The router's decisions themselves
(no_such_service, duplicate_msg_id, unknown_request, not_your_request,
answers routed by correlation_id, a full in-flight table) are driven
message by message in tests/unit/test_router.c."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class NoSuchServiceTest(bp.BrokerTestCase):
    def test_no_such_service_in_three_frame_shape(self):
        p = self.peer()
        m = p.request("nobody-home", "do", src="client-d", delimiter=True)
        frames, body = p.recv()
        self.assertError(body, "no_such_service", correlation_id=m["msg_id"])
        self.assertEqual(frames[0], b"")
        self.assertEqual(len(frames), 2)


class UnknownActionTest(bp.BrokerTestCase):
    def test_unknown_broker_action_is_unknown_action(self):
        p = self.peer()
        m = p.request("broker", "frobnicate", src="client-a")
        self.expectError(p, "unknown_action", correlation_id=m["msg_id"], dst="client-a",
                         action="frobnicate")

    def test_empty_broker_action_is_unknown_action(self):
        p = self.peer()
        m = p.request("broker", "", src="client-b")
        self.expectError(p, "unknown_action", correlation_id=m["msg_id"])


class SlowConsumerTest(bp.BrokerTestCase):
    # The HWM applies to the sender's queue too: it must hold a burst of busy
    # answers (the broker handles up to 64 messages a turn), so not too small.
    BROKER_ARGS = ("--send-hwm", "200")

    def test_full_outbound_queue_answers_busy_and_loses_nothing(self):
        # D4: a consumer that does not read fills its queue; the broker must
        # refuse with busy instead of queueing without end. Every event is
        # either delivered or answered busy.
        slow = self.peer(options={bp.zmq.RCVHWM: 1})
        slow.register("slow-reader")
        sender = self.peer()
        blob = "x" * (64 * 1024)
        sent, busy = [], set()

        def read_answers(timeout):
            while True:
                frames = sender.recv_raw(timeout)
                if frames is None:
                    return
                body = bp.loads(frames[-1])
                self.assertError(body, "busy")
                busy.add(body["correlation_id"])
        for _ in range(600):
            sent.append(sender.send(bp.msg("event", "fast-writer", "slow-reader", "chunk",
                                           payload=blob))["msg_id"])
            read_answers(0)
        read_answers(0.5)
        self.assertTrue(busy, "600 x 64 KiB to a reader that never reads: no busy")
        delivered = set()
        while True:
            frames = slow.recv_raw(0.5)
            if frames is None:
                break
            delivered.add(bp.loads(frames[-1])["msg_id"])
        self.assertFalse(busy & delivered, "refused events were delivered too")
        self.assertEqual(busy | delivered, set(sent), "events lost without a busy answer")
        self.assertAlive()


if __name__ == "__main__":
    bp.main()
