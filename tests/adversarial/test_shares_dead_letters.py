#!/usr/bin/python3
"""Shares of the dead-letter ring (hardening issue, item 16).

The ring keeps 1000 letters and 16 MiB by default. One client that gets
seventeen 1 MB messages refused, or a thousand small ones, must not evict
everyone else's letters: each sender holds at most an eighth of the
count and of the bytes, and a sender over its share loses its own oldest
letter. Listing and replay behave as before.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

MESSAGE_MAX = 1048576


class DeadLetterShareTest(bp.BrokerTestCase):
    # the defaults: --dead-letters 1000, --dead-letter-bytes 16 MiB, share 8

    def letters(self, p):
        body = p.call_broker("dead_letters", payload={"limit": 100000}, timeout=5 * bp.SLOW)
        self.assertEqual(body["type"], "response", bp.dump(body))
        return body["payload"]

    def victims_letters(self, tag, count=3):
        """Each of `count` clients gets one message refused; their msg_ids."""
        ids = []
        for i in range(count):
            p = self.peer(identity="%s-victim-%d" % (tag, i), name="%s-victim-%d" % (tag, i))
            m = p.request("%s-nobody" % tag, "order", payload={"n": i})
            self.expectError(p, "no_such_service", correlation_id=m["msg_id"])
            ids.append(m["msg_id"])
        return ids

    def flood(self, p, count, dst, size=0):
        sent = []
        pad = "x" * size
        for i in range(count):
            m = p.request(dst, "spam", payload={"pad": pad} if size else None)
            sent.append(m["msg_id"])
            self.expectError(p, "no_such_service", correlation_id=m["msg_id"],
                             timeout=5 * bp.SLOW)
        return sent

    def test_large_refused_messages_evict_only_their_senders_letters(self):
        victims = self.victims_letters("dlb")
        attacker = self.peer(identity="dlb-attacker", name="dlb-attacker")
        big = self.flood(attacker, 17, "dlb-void", size=MESSAGE_MAX - 1000)

        listing = self.letters(attacker)
        by_id = {d["msg_id"]: d for d in listing["dead_letters"]}
        for v in victims:
            self.assertTrue(v in by_id, "a victim's letter was evicted by another sender")
            self.assertTrue(by_id[v]["replayable"])
        kept = [m for m in big if m in by_id]
        # 2 MiB, an eighth of 16 MiB: the attacker's newest two, with their bytes
        self.assertEqual(kept, big[-2:])
        self.assertTrue(all(by_id[m]["replayable"] for m in kept))
        self.assertGreaterEqual(listing["evicted"], 15)

        # replay is unchanged: a victim's letter goes out again, as its sender's
        svc = self.peer(register="dlb-nobody")
        body = attacker.call_broker("replay", payload={"id": by_id[victims[1]]["id"]})
        self.assertEqual(body["payload"], {"status": "ok", "replayed": by_id[victims[1]]["id"]})
        _, got = svc.recv(2 * bp.SLOW)
        self.assertEqual((got["msg_id"], got["payload"]), (victims[1], {"n": 1}))

    def test_many_small_refused_messages_evict_only_their_senders_letters(self):
        victims = self.victims_letters("dls")
        attacker = self.peer(identity="dls-attacker", name="dls-attacker")
        sent = self.flood(attacker, 1100, "dls-void")

        listing = self.letters(attacker)
        ids = [d["msg_id"] for d in listing["dead_letters"]]
        for v in victims:
            self.assertTrue(v in ids, "a victim's letter was evicted by another sender")
        kept = [m for m in sent if m in set(ids)]
        self.assertEqual(kept, sent[-125:])          # 1000 / 8, its newest
        # newest first, as before
        self.assertEqual(ids[0], sent[-1])
        self.assertLessEqual(listing["count"], 1000)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
