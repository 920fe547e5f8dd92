#!/usr/bin/python3
"""Dead letters (issue 6): refused, undeliverable and expired messages are
kept in a bounded ring that the broker service lists and replays; and the
limits on names, services and peers answer limit_exceeded."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class DeadLetterTest(bp.BrokerTestCase):
    # one sender fills the ring here: no per-sender share (test_shares_dead_letters.py has it)
    BROKER_ARGS = ("--dead-letters", "5", "--dead-letter-share", "1")

    def letters(self, p, limit=None):
        body = p.call_broker("dead_letters", payload={"limit": limit} if limit else None)
        self.assertEqual(body["type"], "response", bp.dump(body))
        return body["payload"]

    def test_refused_message_is_kept_with_its_code(self):
        p = self.peer()
        m = p.request("dl-nobody", "lost", src="dl-client-1")
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"])
        newest = self.letters(p)["dead_letters"][0]
        self.assertEqual(newest["msg_id"], m["msg_id"])
        self.assertEqual(newest["code"], "no_such_service")
        self.assertEqual(newest["dst"], "dl-nobody")
        self.assertTrue(newest["replayable"])

    def test_expired_request_is_kept_without_its_bytes(self):
        svc = self.peer(register="dl-slow")
        p = self.peer()
        m = p.request("dl-slow", "wait", src="dl-client-2", ttl_ms=100)
        svc.recv()
        self.expectError(p, "timeout", correlation_id=m["msg_id"], timeout=2)
        newest = self.letters(p)["dead_letters"][0]
        self.assertEqual((newest["msg_id"], newest["code"], newest["replayable"]),
                         (m["msg_id"], "timeout", False))

    def test_replay_sends_the_message_again_once_the_service_is_there(self):
        p = self.peer()
        m = p.request("dl-later", "hello", src="dl-client-3", payload={"n": 1})
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"])
        letter = self.letters(p)["dead_letters"][0]
        svc = self.peer(register="dl-later")
        body = p.call_broker("replay", payload={"id": letter["id"]})
        self.assertEqual(body["payload"]["status"], "ok", bp.dump(body))
        _, got = svc.recv()
        self.assertEqual((got["msg_id"], got["payload"]), (m["msg_id"], {"n": 1}))
        svc.answer(got, payload="done")
        _, answer = p.recv_answer(m["msg_id"])
        self.assertEqual(answer["payload"], "done")

    def test_replay_of_unknown_letter_says_why(self):
        p = self.peer()
        body = p.call_broker("replay", payload={"id": 999999})
        self.assertEqual(body["payload"]["status"], "error", bp.dump(body))

    def test_ring_is_bounded(self):
        p = self.peer()
        for i in range(8):
            p.request("dl-nobody-%d" % i, "x", src="dl-client-4")
            p.recv()
        listing = self.letters(p, limit=100)
        self.assertEqual(listing["count"], 5)
        self.assertEqual(len(listing["dead_letters"]), 5)
        self.assertGreaterEqual(listing["evicted"], 3)
        self.assertEqual(listing["dead_letters"][0]["dst"], "dl-nobody-7")


class LimitsTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--max-names-per-peer", "2", "--max-services", "3", "--max-peers", "4")

    def test_names_per_peer(self):
        p = self.peer()
        p.register("lim-a")
        p.register("lim-b")
        m = p.send(bp.msg("register", "lim-c", "broker", "register"))
        self.expectError(p, "limit_exceeded", correlation_id=m["msg_id"])
        p.unregister("lim-a")
        p.unregister("lim-b")

    def test_services_and_peers(self):
        # the class's broker forgets an earlier test's connections when
        # their disconnect reaches it (a slow machine: later): until then
        # they count against --max-peers
        q = self.peer()
        self.assertTrue(bp.wait_until(lambda: q.call_broker("stats")["payload"]["peers"] == 1,
                                      timeout=5 * bp.SLOW), "earlier connections never went")
        owners = [self.peer(register="lim-s%d" % i) for i in range(3)]
        m = q.send(bp.msg("register", "lim-s9", "broker", "register"))
        self.expectError(q, "limit_exceeded", correlation_id=m["msg_id"])
        # four connections known (3 owners + q): a fifth is refused, not dropped
        r = self.peer()
        m = r.request("broker", "ping", src="lim-r")
        self.expectError(r, "limit_exceeded")
        for o in owners:
            o.close()
        # once connections go, new ones are welcome again
        bp.wait_until(lambda: len(bp.services(q)) == 0, timeout=3)
        s = self.peer()
        self.assertEqual(s.call_broker("ping", src="lim-s")["type"], "response")


if __name__ == "__main__":
    bp.main()
