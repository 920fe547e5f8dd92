"""Failures across brokers (docs/protocol.md X10, docs/operations.md).

Steady traffic from a client on broker A to a service held on B and C,
while one part fails: broker B killed (its share stops at once: NATS
drops its subscriptions with its connection), B hung by SIGSTOP (its
share stops once the server's pings cut it: 2 s interval, 2 missed), and
A's own nats-server killed (A moves to the next URL). Every request gets
exactly one answer, or is told why; none vanishes.
"""
import signal
import time
import unittest

from brokerproc import SLOW
from bustraffic import Traffic
from natscluster import NatsCluster, bus_broker, reach, wait_bus_connected


class Failures(unittest.TestCase):

    def setUp(self):
        self.cluster = NatsCluster()
        self.brokers = {}
        for i, bid in enumerate("ABC"):
            self.brokers[bid] = bus_broker(self.cluster, bid, i)
        for b in self.brokers.values():
            wait_bus_connected(b)
        self.peers = []
        self.client = self.peer("A", "till")
        self.on_b = self.peer("B", "work")
        self.on_c = self.peer("C", "work")
        reach(self.client, self.on_b, "work")
        reach(self.client, self.on_c, "work")

    def tearDown(self):
        for p in self.peers:
            p.close()
        for b in self.brokers.values():
            if b.alive():
                b.send_signal(signal.SIGCONT)
                b.kill()
        self.cluster.stop()

    def peer(self, bid, name):
        p = self.brokers[bid].peer()
        self.peers.append(p)
        p.register(name)
        return p

    def check_every_request_told(self, traffic):
        r = traffic.report()
        self.assertEqual(r["duplicates"], [], r)
        self.assertEqual(r["unanswered"], [], r)
        allowed = {"response", "timeout", "no_such_service"}
        self.assertTrue(set(r["outcomes"]) <= allowed, r)
        return r

    def test_a_killed_broker_loses_only_what_it_held(self):
        t_kill = 1.5
        state = {"done": False}

        def tick(t):
            if t >= t_kill and not state["done"]:
                state["done"] = True
                self.brokers["B"].kill()

        traffic = Traffic([("A", self.client)], [("B", self.on_b), ("C", self.on_c)], "work",
                          rate=100, ttl_ms=int(1000 * SLOW))
        traffic.run(t_kill + 4.0 * SLOW, tick)
        r = self.check_every_request_told(traffic)
        self.assertGreater(r["handled_by"].get("B", 0), 0, r)
        after = traffic.outcomes_between(t_kill + 2.0 * SLOW, 1e9)
        self.assertEqual(set(after), {"response"}, after)   # within seconds, C takes all
        before = traffic.outcomes_between(0, t_kill - 0.1)
        self.assertEqual(set(before), {"response"}, before)

    def test_a_hung_broker_times_out_its_share_then_recovers(self):
        # Measured limit (docs/operations.md "A hung broker"): nats-server
        # 2.9 delays its pings while it sends to a client, so under steady
        # traffic a stopped broker keeps its subscriptions and its share;
        # those requests end in timeout at the origin, never vanish, and
        # none is answered twice when the broker resumes.
        t_stop, t_cont = 1.0, 3.0
        state = {"stopped": False, "resumed": False}

        def tick(t):
            if t >= t_stop and not state["stopped"]:
                state["stopped"] = True
                self.brokers["B"].send_signal(signal.SIGSTOP)
            if t >= t_cont and not state["resumed"]:
                state["resumed"] = True
                self.brokers["B"].send_signal(signal.SIGCONT)

        traffic = Traffic([("A", self.client)], [("B", self.on_b), ("C", self.on_c)], "work",
                          rate=50, ttl_ms=int(500 * SLOW))
        traffic.run(t_cont + 5.0 * SLOW, tick)
        r = self.check_every_request_told(traffic)
        hung = traffic.outcomes_between(t_stop + 0.1, t_cont - 0.6 * SLOW)
        self.assertIn("timeout", hung, hung)                  # its share, black-holed
        self.assertIn("response", hung, hung)                 # C's share goes on
        # once it has worked off what queued up while it was stopped
        after = traffic.outcomes_between(t_cont + 3.0 * SLOW, 1e9)
        self.assertEqual(set(after), {"response"}, (after, r))

    def test_a_killed_nats_server_moves_traffic_to_the_others(self):
        t_kill = 1.5
        state = {"done": False}
        c_on_b = self.peer("B", "only-b")
        reach(self.client, c_on_b, "only-b")

        def tick(t):
            if t >= t_kill and not state["done"]:
                state["done"] = True
                self.cluster.kill(0)            # A's first server

        traffic = Traffic([("A", self.client)], [("B", c_on_b)], "only-b", rate=100,
                          ttl_ms=int(1000 * SLOW))
        traffic.run(t_kill + 4.0 * SLOW, tick)
        r = self.check_every_request_told(traffic)
        after = traffic.outcomes_between(t_kill + 2.0 * SLOW, 1e9)
        self.assertEqual(set(after), {"response"}, (after, r))
        st = self.client.call_broker("stats")["payload"]["bus"]
        self.assertGreaterEqual(st["disconnects"], 1, st)
        self.assertTrue(st["connected"], st)
        self.brokers["A"].wait_for_log(r"rejoined the bus", timeout=2 * SLOW)


if __name__ == "__main__":
    unittest.main()
