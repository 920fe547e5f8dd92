#!/usr/bin/python3
"""Routing errors: no_such_service (T3, T5), duplicate_msg_id (T3),
unknown_action (B1), unknown_request and not_your_request (T4), busy when the
in-flight table is full (D4); answers are routed by correlation_id (T4)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def first_to_receive(a, b, timeout=2.0):
    """(peer that got a message, the other peer, the message) for two peers."""
    frames = a.recv_raw(timeout / 2)
    if frames is not None:
        return a, b, bp.loads(frames[-1])
    _, got = b.recv(timeout / 2)
    return b, a, got


class NoSuchServiceTest(bp.BrokerTestCase):
    def test_request_to_unknown_service_is_no_such_service(self):
        p = self.peer()
        m = p.request("nobody-home", "lookup", src="client-a")
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"], dst="client-a",
                         action="lookup")

    def test_event_to_unknown_service_is_no_such_service(self):
        p = self.peer()
        m = p.send(bp.msg("event", "client-b", "nobody-home", "tick"))
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"])

    def test_request_after_the_service_unregistered_is_no_such_service(self):
        svc = self.peer(register="short-lived")
        svc.unregister("short-lived")
        p = self.peer()
        m = p.request("short-lived", "do", src="client-c")
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"])
        svc.expect_nothing()

    def test_no_such_service_in_three_frame_shape(self):
        p = self.peer()
        m = p.request("nobody-home", "do", src="client-d", delimiter=True)
        frames, body = p.recv()
        self.assertError(body, "no_such_service", correlation_id=m["msg_id"])
        self.assertEqual(frames[0], b"")
        self.assertEqual(len(frames), 2)


class DuplicateMsgIdTest(bp.BrokerTestCase):
    def test_same_msg_id_while_in_flight_is_duplicate_msg_id(self):
        svc = self.peer(register="slow-a")
        p = self.peer()
        first = p.request("slow-a", "do", src="client-a")
        svc.recv()
        dup = bp.msg("request", "client-a", "slow-a", "do")
        dup["msg_id"] = first["msg_id"]
        p.send(dup)
        self.expectError(p, "duplicate_msg_id", correlation_id=first["msg_id"])
        svc.expect_nothing()

    def test_same_msg_id_from_another_peer_is_duplicate_msg_id(self):
        svc = self.peer(register="slow-b")
        p1, p2 = self.peer(), self.peer()
        first = p1.request("slow-b", "do", src="client-b1")
        _, got = svc.recv()
        dup = bp.msg("request", "client-b2", "slow-b", "do")
        dup["msg_id"] = first["msg_id"]
        p2.send(dup)
        self.expectError(p2, "duplicate_msg_id", correlation_id=first["msg_id"])
        # The original request is unaffected.
        svc.expect_nothing()
        svc.answer(got)
        _, body = p1.recv_answer(first["msg_id"])
        self.assertEqual(body["type"], "response")

    def test_msg_id_may_be_reused_once_answered(self):
        svc = self.peer(register="quick-c")
        p = self.peer()
        first = p.request("quick-c", "do", src="client-c")
        _, got = svc.recv()
        svc.answer(got)
        p.recv_answer(first["msg_id"])
        again = bp.msg("request", "client-c", "quick-c", "do")
        again["msg_id"] = first["msg_id"]
        p.send(again)
        _, got2 = svc.recv()
        self.assertEqual(got2["msg_id"], first["msg_id"])


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


class UnknownRequestTest(bp.BrokerTestCase):
    def test_response_to_a_request_never_sent_is_unknown_request(self):
        svc = self.peer(register="answerer-a")
        m = svc.send(bp.msg("response", "answerer-a", "someone", "do",
                            correlation_id="never-sent-" + bp.new_id()))
        self.expectError(svc, "unknown_request", correlation_id=m["msg_id"])

    def test_second_answer_is_unknown_request(self):
        svc = self.peer(register="answerer-b")
        client = self.peer()
        req = client.request("answerer-b", "do", src="client-b")
        _, got = svc.recv()
        svc.answer(got, payload=1)
        _, body = client.recv_answer(req["msg_id"])
        self.assertEqual(body["payload"], 1)
        again = svc.answer(got, payload=2)
        self.expectError(svc, "unknown_request", correlation_id=again["msg_id"])
        client.expect_nothing()

    def test_error_answer_to_unknown_request_is_unknown_request(self):
        svc = self.peer(register="answerer-c")
        m = svc.send(bp.msg("error", "answerer-c", "someone", "do",
                            payload={"code": "oops", "message": "x"},
                            correlation_id="never-sent-" + bp.new_id()))
        self.expectError(svc, "unknown_request", correlation_id=m["msg_id"])

    def test_service_error_answer_is_delivered_to_the_requester(self):
        svc = self.peer(register="answerer-d")
        client = self.peer()
        req = client.request("answerer-d", "do", src="client-d")
        _, got = svc.recv()
        sent = svc.answer(got, type="error", payload={"code": "app_failure", "message": "no"})
        frames, body = client.recv_answer(req["msg_id"])
        self.assertEqual(frames[-1], bp.dumps(sent))


class NotYourRequestTest(bp.BrokerTestCase):
    def test_answer_from_another_instance_is_not_your_request(self):
        a = self.peer(identity=b"nyr-a", register="twin")
        b = self.peer(identity=b"nyr-b", register="twin")
        client = self.peer()
        req = client.request("twin", "do", src="client-a")
        handler, other, got = first_to_receive(a, b)
        m = other.answer(got, src="twin")
        self.expectError(other, "not_your_request", correlation_id=m["msg_id"])
        client.expect_nothing()
        # The instance it was handed to can still answer.
        handler.answer(got, src="twin", payload="real")
        _, body = client.recv_answer(req["msg_id"])
        self.assertEqual(body["payload"], "real")

    def test_answer_from_an_unrelated_service_is_not_your_request(self):
        svc = self.peer(register="owner-b")
        meddler = self.peer(register="meddler-b")
        client = self.peer()
        req = client.request("owner-b", "do", src="client-b")
        _, got = svc.recv()
        m = meddler.answer(got)
        self.expectError(meddler, "not_your_request", correlation_id=m["msg_id"])
        client.expect_nothing()
        svc.answer(got)
        client.recv_answer(req["msg_id"])

    def test_answer_from_an_unregistered_peer_is_not_your_request(self):
        svc = self.peer(register="owner-c")
        meddler = self.peer()
        client = self.peer()
        req = client.request("owner-c", "do", src="client-c")
        _, got = svc.recv()
        m = meddler.answer(got, src="free-meddler")
        self.expectError(meddler, "not_your_request", correlation_id=m["msg_id"])
        client.expect_nothing()
        self.assertTrue(req)


class AnswerRoutingTest(bp.BrokerTestCase):
    def test_answer_goes_to_the_requester_whatever_its_dst_says(self):
        svc = self.peer(register="router-a")
        bystander = self.peer(register="bystander-a")
        client = self.peer()
        req = client.request("router-a", "do", src="client-a")
        _, got = svc.recv()
        sent = svc.send(bp.msg("response", "router-a", "bystander-a", "do",
                               correlation_id=got["msg_id"]))
        frames, body = client.recv_answer(req["msg_id"])
        self.assertEqual(frames[-1], bp.dumps(sent))
        bystander.expect_nothing(0.2)

    def test_answers_reach_each_of_two_clients_using_the_same_src(self):
        svc = self.peer(register="router-b")
        c1, c2 = self.peer(), self.peer()
        r1 = c1.request("router-b", "do", src="same-client")
        r2 = c2.request("router-b", "do", src="same-client")
        for _ in range(2):
            _, got = svc.recv()
            svc.answer(got, payload=got["msg_id"])
        self.assertEqual(c1.recv_answer(r1["msg_id"])[1]["payload"], r1["msg_id"])
        self.assertEqual(c2.recv_answer(r2["msg_id"])[1]["payload"], r2["msg_id"])
        c1.expect_nothing(0.1)
        c2.expect_nothing(0.1)


class BusyTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--max-inflight", "2")

    def test_full_inflight_table_answers_busy(self):
        svc = self.peer(register="hoarder")
        client = self.peer()
        held = [client.request("hoarder", "do", src="client-busy") for _ in range(2)]
        for _ in held:
            svc.recv()
        extra = client.request("hoarder", "do", src="client-busy")
        self.expectError(client, "busy", correlation_id=extra["msg_id"])
        svc.expect_nothing(0.1)
        # Room again once one is answered.
        svc.answer(held[0])
        client.recv_answer(held[0]["msg_id"])
        again = client.request("hoarder", "do", src="client-busy")
        _, got = svc.recv()
        self.assertEqual(got["msg_id"], again["msg_id"])


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
