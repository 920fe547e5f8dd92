"""Soak across brokers (about a minute): steady traffic while a broker and
a nats-server are each killed and started again.

Three nats-servers, brokers A, B, C. Services: "work" on B and C, "work-b"
on B only. Clients: one on A calling "work" (crosses to B or C), one on C
calling "work-b" (crosses to B). Faults: broker B killed with SIGKILL at
10 s and started again at 16 s (its services connect again and register
anew); A's first nats-server killed at 28 s and started again at 36 s.

Pass: every request got exactly one answer (a response, or an error that
says why: timeout, no_such_service), none twice, none never; every
non-response falls inside a fault window; and each broker's in-flight
table is empty at the end.
"""
import os
import signal
import time
import unittest

from brokerproc import SLOW, Broker
from bustraffic import Traffic
from natscluster import NatsCluster, bus_broker, reach, wait_bus_connected

RUN_S = float(os.environ.get("SMARTSHOP_SOAK_S", "50"))
T_KILL_BROKER, T_START_BROKER = 10.0, 16.0
T_KILL_SERVER, T_START_SERVER = 28.0, 36.0
WINDOW_S = 5.0 * SLOW           # how long after a fault (or a restart) losses may go on


class BusSoak(unittest.TestCase):

    def setUp(self):
        self.cluster = NatsCluster()
        self.brokers = {bid: bus_broker(self.cluster, bid, i) for i, bid in enumerate("ABC")}
        for b in self.brokers.values():
            wait_bus_connected(b)
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            p.close()
        for b in self.brokers.values():
            if b.alive():
                b.kill()
        self.cluster.stop()

    def peer(self, bid, name):
        p = self.brokers[bid].peer()
        self.peers.append(p)
        p.register(name)
        return p

    def test_soak(self):
        client_a = self.peer("A", "till-a")
        client_c = self.peer("C", "till-c")
        services_b = [self.peer("B", "work"), self.peer("B", "work-b")]
        service_c = self.peer("C", "work")
        reach(client_a, services_b[0], "work")
        reach(client_a, service_c, "work")
        reach(client_c, services_b[1], "work-b")

        # two flows, pumped together: one Traffic per flow, alternately
        flow_a = Traffic([("A", client_a)], [("B", services_b[0]), ("C", service_c)], "work",
                         rate=100, ttl_ms=int(1000 * SLOW))
        flow_c = Traffic([("C", client_c)], [("B", services_b[1])], "work-b", rate=100,
                         ttl_ms=int(1000 * SLOW))
        flow_c.t0 = flow_a.t0
        done = set()
        b_port = self.brokers["B"].port

        def tick(t):
            flow_c._pump(0)
            if t >= T_KILL_BROKER and "kill-b" not in done:
                done.add("kill-b")
                self.brokers["B"].kill()
            if t >= T_START_BROKER and "start-b" not in done:
                done.add("start-b")
                b = bus_broker(self.cluster, "B", 1, port=b_port)
                self.brokers["B"] = b
                wait_bus_connected(b)
                for p in services_b:
                    p.close()
                services_b[:] = [self.peer("B", "work"), self.peer("B", "work-b")]
                flow_a.set_services([("B", services_b[0]), ("C", service_c)])
                flow_c.set_services([("B", services_b[1])])
            if t >= T_KILL_SERVER and "kill-n1" not in done:
                done.add("kill-n1")
                self.cluster.kill(0)
            if t >= T_START_SERVER and "start-n1" not in done:
                done.add("start-n1")
                self.cluster.start(0, wait=False)

        # flow_c is sent from the tick: a request every 10 ms
        last = {"t": 0.0}

        def tick_both(t):
            while last["t"] + 0.01 <= t:
                last["t"] += 0.01
                flow_c._send("C", client_c)
            tick(t)

        flow_a.run(RUN_S, tick_both)
        flow_c.drain()

        faults = [(T_KILL_BROKER, T_START_BROKER + WINDOW_S),
                  (T_KILL_SERVER, T_START_SERVER + WINDOW_S)]
        for label, flow in (("A->work", flow_a), ("C->work-b", flow_c)):
            r = flow.report()
            self.assertGreater(r["sent"], RUN_S * 50, (label, r))
            self.assertEqual(r["duplicates"], [], (label, r))
            self.assertEqual(r["unanswered"], [], (label, r))
            self.assertTrue(set(r["outcomes"]) <= {"response", "timeout", "no_such_service"},
                            (label, r))
            for mid, outcomes in flow.answers.items():
                if outcomes[0][0] == "response":
                    continue
                sent_at = flow.sent[mid][1]
                self.assertTrue(any(a - 0.5 <= sent_at <= b for a, b in faults),
                                "%s: %s at %.2f s, outside every fault window"
                                % (label, outcomes[0][0], sent_at))
            ok_share = r["outcomes"].get("response", 0) / r["sent"]
            self.assertGreater(ok_share, 0.6, (label, r))
            print("%s: %s" % (label, r["outcomes"]))
        deadline = time.monotonic() + 5 * SLOW
        for bid, b in self.brokers.items():
            with b.peer() as p:
                while True:
                    n = p.call_broker("stats", src="soak-%s" % bid)["payload"]["inflight"]
                    if n == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                self.assertEqual(n, 0, bid)


if __name__ == "__main__":
    unittest.main()
