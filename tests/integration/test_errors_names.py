#!/usr/bin/python3
"""Names and who may use them: bad_name (N1), reserved_name (N2),
not_registered (T2), spoofed_src (S1-S3)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

BAD_NAMES = {
    "empty": "",
    "space": "bad name",
    "too_long_65": "a" * 65,
    "leading_dash": "-svc",
    "leading_dot": ".svc",
    "leading_colon": ":svc",
    "leading_underscore": "_svc",
    "slash": "a/b",
    "at_sign": "a@b",
    "non_ascii_lookalike": "\u0430dmin",  # Cyrillic a
    "thai": "\u0e01\u0e02",
    "tab": "a\tb",
}

GOOD_NAMES = ["a", "Z", "9lives", "a" * 64, "svc.v2:eu-west_1", "brokerage", "smartshopx",
              "broker-like"]


class BadNameTest(bp.BrokerTestCase):
    def test_register_with_bad_name_is_bad_name(self):
        for case, name in BAD_NAMES.items():
            with self.subTest(case=case):
                p = self.peer()
                m = p.send(bp.msg("register", name, "broker", "register"))
                self.expectError(p, "bad_name", correlation_id=m["msg_id"], dst=None)

    def test_escaped_name_is_bad_name(self):
        # N1: written without escapes, even when the escape spells a good name.
        for written in ("a\\u0062c", "\\u0061", "ab\\u0000", "a\\/b"):
            with self.subTest(written=written):
                p = self.peer()
                mid = bp.new_id("esc")
                raw = ('{"msg_id":"%s","type":"register","src":"%s","dst":"broker",'
                       '"action":"register"}' % (mid, written)).encode()
                p.send(raw)
                self.expectError(p, "bad_name", correlation_id=mid)

    def test_request_with_bad_src_is_bad_name(self):
        p = self.peer()
        m = p.request("broker", "ping", src="bad src")
        self.expectError(p, "bad_name", correlation_id=m["msg_id"], dst=None, action="ping")

    def test_request_with_bad_dst_is_bad_name(self):
        p = self.peer()
        m = p.request("bad dst", "do", src="good-src")
        self.expectError(p, "bad_name", correlation_id=m["msg_id"], dst="good-src")

    def test_event_with_bad_dst_is_bad_name(self):
        p = self.peer()
        m = p.send(bp.msg("event", "good-src", "no/slash", "tick"))
        self.expectError(p, "bad_name", correlation_id=m["msg_id"])

    def test_good_names_register(self):
        for name in GOOD_NAMES:
            with self.subTest(name=name):
                p = self.peer()
                body = p.register(name)
                self.assertEqual(body["payload"]["name"], name)


class ReservedNameTest(bp.BrokerTestCase):
    RESERVED = ["broker", "broadcast", "broker.x", "broker.metrics", "smartshop.x",
                "smartshop.core"]

    def test_register_reserved_name_is_reserved_name(self):
        for name in self.RESERVED:
            with self.subTest(name=name):
                p = self.peer()
                m = p.send(bp.msg("register", name, "broker", "register"))
                self.expectError(p, "reserved_name", correlation_id=m["msg_id"])

    def test_reserved_name_as_src_is_reserved_name(self):
        for name in ("broker", "broadcast", "smartshop.x", "broker.y"):
            with self.subTest(name=name):
                p = self.peer()
                m = p.request("broker", "ping", src=name)
                self.expectError(p, "reserved_name", correlation_id=m["msg_id"])

    def test_reserved_name_is_not_listed(self):
        p = self.peer()
        p.send(bp.msg("register", "broker", "broker", "register"))
        p.recv()
        self.assertNotIn("broker", bp.services(self.peer()))


class NotRegisteredTest(bp.BrokerTestCase):
    def test_unregister_a_name_never_registered_is_not_registered(self):
        p = self.peer()
        m = p.send(bp.msg("unregister", "never-had-it", "broker", "unregister"))
        self.expectError(p, "not_registered", correlation_id=m["msg_id"])

    def test_unregister_a_name_held_by_another_connection_is_not_registered(self):
        owner = self.peer(register="held-elsewhere")
        other = self.peer(register="someone-else")
        m = other.send(bp.msg("unregister", "held-elsewhere", "broker", "unregister"))
        self.expectError(other, "not_registered", correlation_id=m["msg_id"])
        self.assertEqual(bp.services(owner).get("held-elsewhere"), 1)

    def test_unregister_twice_is_not_registered(self):
        p = self.peer(register="twice-dropped")
        body = p.unregister("twice-dropped")
        self.assertEqual(body["type"], "response", bp.dump(body))
        m = p.send(bp.msg("unregister", "twice-dropped", "broker", "unregister"))
        self.expectError(p, "not_registered", correlation_id=m["msg_id"])


class SpoofedSrcTest(bp.BrokerTestCase):
    def test_unregistered_peer_using_a_held_name_is_spoofed_src(self):
        self.peer(register="victim-a")
        thief = self.peer()
        m = thief.request("broker", "ping", src="victim-a")
        self.expectError(thief, "spoofed_src", correlation_id=m["msg_id"])

    def test_unregistered_peer_using_a_free_name_is_fine(self):
        p = self.peer()
        body = p.call_broker("ping", src="free-name-client")
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["dst"], "free-name-client")

    def test_a_free_name_taken_later_is_spoofed_src(self):
        # the broker remembers the last free name a client sent as; a
        # registration by another connection must end that at once
        p = self.peer()
        for _ in range(3):
            body = p.call_broker("ping", src="taken-later")
            self.assertEqual(body["type"], "response", bp.dump(body))
        self.peer(register="taken-later")
        m = p.request("broker", "ping", src="taken-later")
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])
        # and free again once its holder unregisters
        other = self.peer(register="taken-then-freed")
        m = p.request("broker", "ping", src="taken-then-freed")
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])
        other.unregister("taken-then-freed")
        body = p.call_broker("ping", src="taken-then-freed")
        self.assertEqual(body["type"], "response", bp.dump(body))

    def test_registered_peer_using_another_name_is_spoofed_src(self):
        p = self.peer(register="honest-a")
        m = p.request("broker", "ping", src="not-mine-at-all")
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])

    def test_registered_peer_using_anothers_name_for_an_event_is_spoofed_src(self):
        self.peer(register="victim-b")
        listener = self.peer(register="listener-b")
        p = self.peer(register="liar-b")
        m = p.send(bp.msg("event", "victim-b", "listener-b", "tick"))
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])
        listener.expect_nothing()

    def test_spoofed_broadcast_is_not_delivered(self):
        self.peer(register="victim-c")
        listener = self.peer(register="listener-c")
        p = self.peer()
        m = p.send(bp.msg("event", "victim-c", "broadcast", "tick"))
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])
        listener.expect_nothing()

    def test_response_with_someone_elses_src_is_spoofed_src(self):
        svc = self.peer(register="svc-d")
        self.peer(register="victim-d")
        client = self.peer()
        req = client.request("svc-d", "do", src="client-d")
        _, got = svc.recv()
        m = svc.answer(got, src="victim-d")
        self.expectError(svc, "spoofed_src", correlation_id=m["msg_id"])
        client.expect_nothing()
        # The real answer still goes through.
        svc.answer(got)
        _, body = client.recv_answer(req["msg_id"])
        self.assertEqual(body["type"], "response")

    def test_registered_peer_may_register_more_names(self):
        p = self.peer(register="first-e")
        p.register("second-e")
        body = p.call_broker("ping", src="second-e")
        self.assertEqual(sorted(body["payload"]["registered"]), ["first-e", "second-e"])


if __name__ == "__main__":
    bp.main()
