"""Failures across brokers (docs/protocol.md X10, docs/operations.md).

Steady traffic from a client on broker A to a service held on B and C,
while one part fails: broker B killed (its share stops at once: NATS
drops its subscriptions with its connection), B hung by SIGSTOP (its
share stops once A has not heard B's announcements for 3 s), and
A's own nats-server killed (A moves to the next URL). Every request gets
exactly one answer, or is told why; none vanishes.
"""
import json
import signal
import time
import unittest

from brokerproc import SLOW, cpu_seconds
from bustraffic import Traffic
from natscluster import NatsCluster, bus_broker, reach, wait_bus_connected


# Sanitizer builds: longer windows, and fewer requests a second so that a
# resumed broker's backlog stays short
PACE = 1.0 if SLOW == 1 else 2.0
RATE = 100 if SLOW == 1 else 40


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
                          rate=RATE, ttl_ms=int(1000 * SLOW))
        traffic.run(t_kill + 4.0 * PACE, tick)
        r = self.check_every_request_told(traffic)
        self.assertGreater(r["handled_by"].get("B", 0), 0, r)
        after = traffic.outcomes_between(t_kill + 2.0 * PACE, 1e9)
        self.assertEqual(set(after), {"response"}, after)   # within seconds, C takes all
        before = traffic.outcomes_between(0, t_kill - 0.1)
        self.assertEqual(set(before), {"response"}, before)

    def test_a_hung_broker_loses_its_share_within_seconds(self):
        # X10, docs/operations.md "A hung broker": nats-server 2.9 delays
        # its pings while it sends to a client, so under steady traffic a
        # stopped broker keeps its queue subscriptions. Its announcements
        # (smartshop.dir, every second) stop, though: once B has been
        # silent for 3 s, A sends what B's queue group would have had to
        # C's own subject. Until then B's share ends in timeout at the
        # origin; after, C answers everything; none vanishes, and nothing
        # is answered twice when B resumes and works off its backlog.
        t_stop = 1.0
        t_cont = t_stop + 7.0 * PACE
        state = {"stopped": False, "resumed": False}

        def tick(t):
            if t >= t_stop and not state["stopped"]:
                state["stopped"] = True
                self.brokers["B"].send_signal(signal.SIGSTOP)
            if t >= t_cont and not state["resumed"]:
                state["resumed"] = True
                self.brokers["B"].send_signal(signal.SIGCONT)

        traffic = Traffic([("A", self.client)], [("B", self.on_b), ("C", self.on_c)], "work",
                          rate=RATE // 2, ttl_ms=int(500 * SLOW))
        traffic.run(t_cont + 7.0 * PACE, tick)
        r = self.check_every_request_told(traffic)
        first = traffic.outcomes_between(t_stop + 0.1, t_stop + 1.5)
        self.assertIn("timeout", first, first)                # its share, until it is silent
        self.assertIn("response", first, first)               # C's share goes on
        lost = [t for mid, (_, t) in traffic.sent.items()
                if t_stop < t < t_cont and traffic.answers[mid][0][0] != "response"]
        print("hung broker: last request lost %.2f s after SIGSTOP (%d lost)"
              % (max(lost) - t_stop, len(lost)))
        cut_off = traffic.outcomes_between(t_stop + 4.0 * PACE, t_cont)
        self.assertEqual(set(cut_off), {"response"}, (cut_off, r))   # all C's now
        stats = self.peer("A", "ops").call_broker("stats")["payload"]["bus"]
        self.assertGreater(stats["directed_out"], 0, stats)
        # once it has worked off what queued up while it was stopped (how
        # long that takes depends on the machine): only responses again
        failed_at = [t for mid, (_, t) in traffic.sent.items()
                     if t > t_cont and traffic.answers[mid][0][0] != "response"]
        self.assertLess(max(failed_at, default=0), t_cont + 5.0 * PACE, r)
        after = traffic.outcomes_between(t_cont + 5.0 * PACE, 1e9)
        self.assertEqual(set(after), {"response"}, (after, r))

    def test_a_stopping_broker_answers_shutting_down_across(self):
        # D5 across brokers (X8): B leaves the bus at SIGTERM (new requests
        # go to C), and what it still holds at the end of its grace period
        # is answered shutting_down to the broker that asked
        held = None                         # the msg_id of a request B holds
        sent = set()                        # (B may also hold reach()'s probes)
        for _ in range(50):                 # until B holds one (C answers its own)
            sent.add(self.client.request("work", ttl_ms=int(20000 * SLOW))["msg_id"])
            for frames in self.on_b.drain(0.3 * SLOW):
                if json.loads(frames[-1])["msg_id"] in sent:
                    held = json.loads(frames[-1])["msg_id"]
            if held:
                break
            for frames in self.on_c.drain(0.1):
                self.on_c.answer(json.loads(frames[-1]), {})
        self.assertIsNotNone(held, "no request reached B")
        for frames in self.on_c.drain(0.3 * SLOW):      # late ones C got
            self.on_c.answer(json.loads(frames[-1]), {})
        self.brokers["B"].send_signal(signal.SIGTERM)
        _, body = self.client.recv_answer(held, 10 * SLOW)
        self.assertEqual(body["type"], "error", body)
        self.assertEqual(body["payload"]["code"], "shutting_down", body)
        self.assertEqual(self.brokers["B"].wait(10 * SLOW), 0)
        # and the bus sends the next requests to C
        m = self.client.request("work", ttl_ms=int(3000 * SLOW))
        _, req = self.on_c.recv(3 * SLOW)
        self.on_c.answer(req, {})
        _, body = self.client.recv_answer(m["msg_id"], 3 * SLOW)
        self.assertEqual(body["type"], "response", body)

    def test_a_killed_nats_server_moves_traffic_to_the_others(self):
        t_kill = 1.5
        state = {"done": False}
        c_on_b = self.peer("B", "only-b")
        reach(self.client, c_on_b, "only-b")

        def tick(t):
            if t >= t_kill and not state["done"]:
                state["done"] = True
                self.cluster.kill(0)            # A's first server

        traffic = Traffic([("A", self.client)], [("B", c_on_b)], "only-b", rate=RATE,
                          ttl_ms=int(1000 * SLOW))
        traffic.run(t_kill + 4.0 * PACE, tick)
        r = self.check_every_request_told(traffic)
        after = traffic.outcomes_between(t_kill + 2.0 * PACE, 1e9)
        self.assertEqual(set(after), {"response"}, (after, r))
        st = self.client.call_broker("stats")["payload"]["bus"]
        self.assertGreaterEqual(st["disconnects"], 1, st)
        self.assertTrue(st["connected"], st)
        self.brokers["A"].wait_for_log(r"rejoined the bus", timeout=2 * SLOW)



class Orphan(unittest.TestCase):
    """A broker whose every NATS server is gone idles while libnats retries."""

    def test_a_broker_without_its_servers_stays_idle(self):
        # libnats closes the lost server's socket without detaching it; a
        # loop that polled the dead descriptor spun at full speed (POLLNVAL
        # every pass) for as long as the servers were away
        cluster = NatsCluster(size=1)
        b = bus_broker(cluster, "orphan", 0)
        try:
            wait_bus_connected(b)
            cluster.kill(0)
            b.wait_for_log(r"lost the NATS server", timeout=5 * SLOW)
            time.sleep(0.5)
            before, t0 = cpu_seconds(b.proc.pid), time.monotonic()
            time.sleep(3.0)
            used = cpu_seconds(b.proc.pid) - before
            share = used / (time.monotonic() - t0)
            print("orphan broker: %.1f %% CPU" % (100 * share))
            self.assertLess(share, 0.05 * SLOW, "%.2f s of CPU in 3 s" % used)
            with b.peer() as cli:                    # and it still serves its own
                self.assertEqual(cli.call_broker("ping")["type"], "response")
        finally:
            b.kill()
            cluster.stop()


class Announcements(unittest.TestCase):

    def test_names_over_max_payload_are_reported_once(self):
        # a broker whose list of names cannot cross (over the servers'
        # max_payload) says so, once: the others will take it for silent
        cluster = NatsCluster(size=1, extra_conf="max_payload: 2048\n")
        b = bus_broker(cluster, "many", 0)
        try:
            wait_bus_connected(b)
            with b.peer() as svc:
                for i in range(60):         # about 3 KB of names
                    svc.register("shelf-%03d-aisle-%03d-%s" % (i, i, "x" * 24))
                b.wait_for_log(r"over the NATS servers' max_payload", timeout=5 * SLOW)
                time.sleep(2.5)
                self.assertEqual(b.log_text().count("over the NATS servers' max_payload"), 1)
        finally:
            b.kill()
            cluster.stop()

if __name__ == "__main__":
    unittest.main()
