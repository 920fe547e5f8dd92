#!/usr/bin/python3
"""Broadcast events (T5): every registered connection except the sender's,
each exactly once (one copy for a connection with several names)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

N = 5


class BroadcastTest(bp.BrokerTestCase):
    def setUp(self):
        # A fresh broker per test: broadcast reaches every registered peer,
        # so peers left over from another test must not exist.
        super().setUp()
        self.broker = bp.Broker()

    def tearDown(self):
        super().tearDown()
        self.assertTrue(self.broker.alive(), self.broker.log_text())
        self.assertEqual(self.broker.stop(), 0, self.broker.log_text())
        self.broker.cleanup()

    @classmethod
    def setUpClass(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        pass

    def receivers(self, n=N, prefix="bc"):
        return [self.peer(identity="%s-%d" % (prefix, i), register="%s-%d" % (prefix, i))
                for i in range(n)]

    def assertEachGotExactlyOnce(self, peers, sent_bytes):
        for p in peers:
            frames = p.recv_raw(2.0)
            self.assertIsNotNone(frames, "%s got nothing" % p.name)
            self.assertEqual(frames[-1], sent_bytes, "%s got other bytes" % p.name)
        time.sleep(0.2)  # a duplicate would have arrived by now
        for p in peers:
            p.expect_nothing(0)

    def test_broadcast_reaches_every_other_registered_peer_once(self):
        peers = self.receivers()
        sender = peers[0]
        ev = sender.send(bp.msg("event", "bc-0", "broadcast", "price_changed", payload={"sku": 1}))
        self.assertEachGotExactlyOnce(peers[1:], bp.dumps(ev))
        sender.expect_nothing(0.3)

    def test_broadcast_to_five_from_an_outside_sender(self):
        peers = self.receivers()
        sender = self.peer(register="bc-sender")
        ev = sender.send(bp.msg("event", "bc-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers, bp.dumps(ev))
        sender.expect_nothing(0.3)

    def test_peer_with_two_names_gets_one_copy(self):
        peers = self.receivers()
        double = self.peer(register="bc-double-a")
        double.register("bc-double-b")
        sender = self.peer(register="bc-sender")
        ev = sender.send(bp.msg("event", "bc-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers + [double], bp.dumps(ev))

    def test_sender_with_two_names_gets_nothing(self):
        peers = self.receivers()
        sender = self.peer(register="bc-two-a")
        sender.register("bc-two-b")
        ev = sender.send(bp.msg("event", "bc-two-b", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers, bp.dumps(ev))
        sender.expect_nothing(0.3)

    def test_instances_of_one_name_each_get_a_copy(self):
        inst = [self.peer(identity="same-%d" % i, register="bc-same") for i in range(3)]
        sender = self.peer(register="bc-sender")
        ev = sender.send(bp.msg("event", "bc-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(inst, bp.dumps(ev))

    def test_unregistered_sender_may_broadcast(self):
        peers = self.receivers()
        sender = self.peer()
        ev = sender.send(bp.msg("event", "loose-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers, bp.dumps(ev))
        sender.expect_nothing(0.3)

    def test_unregistered_peers_get_no_broadcast(self):
        peers = self.receivers(2)
        bystander = self.peer()
        bystander.call_broker("ping", src="bystander")  # connected and known, not registered
        sender = self.peer(register="bc-sender")
        ev = sender.send(bp.msg("event", "bc-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers, bp.dumps(ev))
        bystander.expect_nothing(0.3)

    def test_unregistered_peer_gets_no_more_broadcasts(self):
        peers = self.receivers(3)
        peers[2].unregister("bc-2")
        sender = self.peer(register="bc-sender")
        ev = sender.send(bp.msg("event", "bc-sender", "broadcast", "tick"))
        self.assertEachGotExactlyOnce(peers[:2], bp.dumps(ev))
        peers[2].expect_nothing(0.2)

    def test_broadcast_with_no_receivers_is_not_an_error(self):
        sender = self.peer(register="bc-alone")
        sender.send(bp.msg("event", "bc-alone", "broadcast", "tick"))
        sender.expect_nothing(0.4)

    def test_many_broadcasts_arrive_in_order_once_each(self):
        peers = self.receivers()
        sender = self.peer(register="bc-sender")
        sent = [bp.dumps(sender.send(bp.msg("event", "bc-sender", "broadcast", "seq",
                                            payload=i))) for i in range(50)]
        for p in peers:
            got = [p.recv_raw(2.0) for _ in sent]
            self.assertEqual([f[-1] if f else None for f in got], sent, p.name)
        time.sleep(0.1)
        for p in peers:
            p.expect_nothing(0)


if __name__ == "__main__":
    bp.main()
