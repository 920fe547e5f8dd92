#!/usr/bin/python3
"""Fates of requests in flight: timeout (D1), service_gone (D2),
requester_gone (D3)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def stats(peer):
    return peer.call_broker("stats", src="stats-reader")["payload"]


class TimeoutTest(bp.BrokerTestCase):
    def test_request_past_its_ttl_gets_timeout(self):
        svc = self.peer(register="sleepy-a")
        client = self.peer()
        t0 = time.monotonic()
        req = client.request("sleepy-a", "nap", src="client-a", ttl_ms=200)
        svc.recv()
        body = self.expectError(client, "timeout", correlation_id=req["msg_id"], dst="client-a",
                                action="nap")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.15, "timeout came before the ttl: %.3f s" % elapsed)
        self.assertLess(elapsed, 1.5, "timeout came late: %.3f s" % elapsed)
        self.assertTrue(body)

    def test_late_answer_is_unknown_request_and_not_delivered(self):
        svc = self.peer(register="sleepy-b")
        client = self.peer()
        req = client.request("sleepy-b", "nap", src="client-b", ttl_ms=100)
        _, got = svc.recv()
        self.expectError(client, "timeout", correlation_id=req["msg_id"])
        late = svc.answer(got)
        self.expectError(svc, "unknown_request", correlation_id=late["msg_id"])
        client.expect_nothing()

    def test_answer_within_ttl_is_delivered_and_no_timeout_follows(self):
        svc = self.peer(register="prompt-c")
        client = self.peer()
        req = client.request("prompt-c", "do", src="client-c", ttl_ms=300)
        _, got = svc.recv()
        svc.answer(got)
        _, body = client.recv_answer(req["msg_id"])
        self.assertEqual(body["type"], "response")
        client.expect_nothing(0.5)

    def test_timeouts_are_counted_in_stats(self):
        svc = self.peer(register="sleepy-d")
        client = self.peer()
        before = stats(client)["errors"].get("timeout", 0)
        req = client.request("sleepy-d", "nap", src="client-d", ttl_ms=50)
        svc.recv()
        self.expectError(client, "timeout", correlation_id=req["msg_id"])
        self.assertEqual(stats(client)["errors"].get("timeout", 0), before + 1)


class DefaultTimeoutTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--request-timeout-ms", "300")

    def test_request_timeout_ms_flag_sets_the_default_deadline(self):
        svc = self.peer(register="sleepy-e")
        client = self.peer()
        t0 = time.monotonic()
        req = client.request("sleepy-e", "nap", src="client-e")
        svc.recv()
        self.expectError(client, "timeout", correlation_id=req["msg_id"])
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 1.5)

    def test_ttl_ms_overrides_the_default(self):
        svc = self.peer(register="sleepy-f")
        client = self.peer()
        t0 = time.monotonic()
        req = client.request("sleepy-f", "nap", src="client-f", ttl_ms=800)
        svc.recv()
        self.expectError(client, "timeout", correlation_id=req["msg_id"])
        self.assertGreaterEqual(time.monotonic() - t0, 0.7)


class ServiceGoneTest(bp.BrokerTestCase):
    def test_handler_disconnect_gives_service_gone(self):
        svc = self.peer(register="fragile-a")
        client = self.peer()
        req = client.request("fragile-a", "do", src="client-a")
        svc.recv()
        svc.close()
        self.expectError(client, "service_gone", correlation_id=req["msg_id"], timeout=3,
                         dst="client-a")

    def test_request_is_never_handed_to_a_second_instance(self):
        a = self.peer(identity=b"sg-a", register="fragile-b")
        b = self.peer(identity=b"sg-b", register="fragile-b")
        client = self.peer()
        req = client.request("fragile-b", "do", src="client-b")
        frames = a.recv_raw(1.0)
        handler, other = (a, b) if frames is not None else (b, a)
        if frames is None:
            b.recv()
        handler.close()
        self.expectError(client, "service_gone", correlation_id=req["msg_id"], timeout=3)
        other.expect_nothing(0.3)
        client.expect_nothing(0.2)

    def test_each_request_handed_to_a_gone_instance_fails(self):
        svc = self.peer(register="fragile-c")
        client = self.peer()
        reqs = [client.request("fragile-c", "do", src="client-c") for _ in range(3)]
        for _ in reqs:
            svc.recv()
        svc.close()
        got = {}
        for _ in reqs:
            _, body = client.recv(3)
            self.assertError(body, "service_gone")
            got[body["correlation_id"]] = body
        self.assertEqual(sorted(got), sorted(r["msg_id"] for r in reqs))


class RequesterGoneTest(bp.BrokerTestCase):
    def test_answer_for_a_gone_requester_is_dropped_and_counted(self):
        svc = self.peer(register="patient-a")
        client = self.peer()
        client.request("patient-a", "do", src="client-a")
        _, got = svc.recv()
        client.close()
        reader = self.peer()

        def peers_gone():
            return stats(reader)["peers"] <= 2  # svc and reader
        bp.wait_until(peers_gone, timeout=2.0)
        before = stats(reader)["dropped"]["requester_gone"]
        svc.answer(got)
        svc.expect_nothing(0.3)  # no error to the service (D3)
        self.assertEqual(stats(reader)["dropped"]["requester_gone"], before + 1)


if __name__ == "__main__":
    bp.main()
