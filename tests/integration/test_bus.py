"""Three brokers on a three-node NATS cluster (docs/protocol.md X1-X12).

Each broker lists all three nats-servers, a different one first, so what
crosses goes through the cluster's routes. Cross-broker request/response
(bytes as sent), names with dots, no_such_service at once, timeout owned
by the origin, service_gone, late answers dropped, events, broadcasts
exactly once, topic events, anti-spoofing where a message enters, and
local names that never touch NATS.
"""
import json
import time
import unittest

from brokerproc import SLOW, error_code, msg
from natscluster import BusTestCase, gone_from_bus, reach, round_trip


def bus_stats(peer):
    return peer.call_broker("stats")["payload"]["bus"]


class CrossBroker(BusTestCase):
    # A gives up on requests without ttl_ms sooner than B (default 30 s):
    # B still holds its record when A's deadline has passed
    PER_BROKER_ARGS = {"A": ["--request-timeout-ms", str(int(600 * SLOW))]}

    def test_request_crosses_and_its_answer_comes_back_byte_exact(self):
        svc = self.peer("B", "price")
        cli = self.peer("A", "till-1")
        reach(cli, svc, "price")
        m = cli.request("price", action="quote", payload={"sku": "a-1"})
        frames, body = svc.recv(2 * SLOW)
        self.assertEqual(body["msg_id"], m["msg_id"])
        self.assertEqual(body["src"], "till-1")
        # the service's exact bytes, odd spacing and all (E6)
        raw = ('{"v":1, "msg_id":"r-%s","type":"response","src":"price","dst":"till-1",'
               '"action":"quote","correlation_id":"%s","timestamp":"2026-01-01T00:00:00.000Z",'
               '"payload":{"price":  4.20}}' % (m["msg_id"], m["msg_id"])).encode()
        svc.send(raw)
        frames, ans = cli.recv_answer(m["msg_id"], 2 * SLOW)
        self.assertEqual(frames[-1], raw)
        self.assertEqual(ans["payload"], {"price": 4.20})
        cli.expect_nothing(0.3 * SLOW)          # exactly one answer

    def test_name_with_dots_crosses(self):
        svc = self.peer("C", "inv..eu.")
        cli = self.peer("A", "till-2")
        reach(cli, svc, "inv..eu.")

    def test_no_such_service_at_once(self):
        cli = self.peer("A", "till-3")
        start = time.monotonic()
        m = cli.request("nobody-anywhere")
        _, body = cli.recv_answer(m["msg_id"], 2 * SLOW)
        self.assertEqual(error_code(body), "no_such_service", body)
        self.assertLess(time.monotonic() - start, 1.0 * SLOW)   # not a deadline: at once
        self.assertEqual(body["correlation_id"], m["msg_id"])

    def test_timeout_is_the_origins_and_a_late_answer_is_dropped(self):
        svc = self.peer("B", "slow-svc")
        cli = self.peer("A", "till-4")
        reach(cli, svc, "slow-svc")
        start = time.monotonic()
        m = cli.request("slow-svc")             # no ttl_ms: A's 600 ms, B's 30 s
        _, req = svc.recv(2 * SLOW)
        _, body = cli.recv_answer(m["msg_id"], 3 * SLOW)
        self.assertEqual(error_code(body), "timeout", body)
        self.assertLess(time.monotonic() - start, 1.5 * SLOW)
        late_before = bus_stats(cli)["late"]
        svc.answer(req, {"too": "late"})        # B still holds its record: it crosses
        cli.expect_nothing(0.5 * SLOW)           # and A drops it: one answer only
        deadline = time.monotonic() + 3 * SLOW
        while bus_stats(cli)["late"] == late_before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(bus_stats(cli)["late"], late_before + 1)

    def test_service_gone_crosses(self):
        svc = self.peer("B", "fragile")
        cli = self.peer("A", "till-5")
        reach(cli, svc, "fragile")
        m = cli.request("fragile", ttl_ms=int(10000 * SLOW))
        svc.recv(2 * SLOW)
        svc.close()                             # the instance dies holding it
        _, body = cli.recv_answer(m["msg_id"], 5 * SLOW)
        self.assertEqual(error_code(body), "service_gone", body)
        gone_from_bus(cli, "fragile")           # and its name leaves the bus

    def test_shares_between_brokers_follow_instances(self):
        b1, b2 = self.peer("B", "shared"), self.peer("B", "shared")
        c1 = self.peer("C", "shared")
        cli = self.peer("A", "till-6")
        reach(cli, c1, "shared")
        reach(cli, b1, "shared")
        for p in (b1, b2, c1):
            p.drain(0.05)
        ids = [cli.request("shared", ttl_ms=int(5000 * SLOW))["msg_id"] for _ in range(60)]
        got = {"b1": 0, "b2": 0, "c1": 0}
        deadline = time.monotonic() + 5 * SLOW
        while sum(got.values()) < 60 and time.monotonic() < deadline:
            for key, p in (("b1", b1), ("b2", b2), ("c1", c1)):
                frames = p.recv_raw(0.01)
                if frames:
                    body = json.loads(frames[-1])
                    if body.get("msg_id") in ids:
                        got[key] += 1
                        p.answer(body, {})
        self.assertEqual(sum(got.values()), 60, got)       # each once, nobody twice
        self.assertTrue(all(v > 0 for v in got.values()), got)
        answers = set()                 # (probes that reach() left unanswered time out)
        while len(answers) < 60:
            _, body = cli.recv(3 * SLOW)
            if body["correlation_id"] in ids:
                self.assertEqual(body["type"], "response", body)
                answers.add(body["correlation_id"])
        self.assertEqual(answers, set(ids))

    def test_event_crosses_and_nobody_is_told(self):
        sink = self.peer("C", "ev-sink")
        cli = self.peer("A", "till-7")
        reach(cli, sink, "ev-sink")
        e = cli.send(msg("event", "till-7", "ev-sink", "sold", payload={"n": 1}))
        _, body = sink.recv(2 * SLOW)
        self.assertEqual(body["msg_id"], e["msg_id"])
        cli.expect_nothing(0.3 * SLOW)          # an event delivered is not answered
        e = cli.send(msg("event", "till-7", "ev-nobody", "sold"))
        _, body = cli.recv(2 * SLOW)
        self.assertEqual(error_code(body), "no_such_service", body)
        self.assertEqual(body["correlation_id"], e["msg_id"])

    def test_broadcast_reaches_every_connection_on_every_broker_once(self):
        sender = self.peer("A", "bc-sender")
        others = [self.peer(bid, "bc-%s-%d" % (bid, i)) for bid in "ABC" for i in range(2)]
        quiet = self.peer("B")                  # holds no name: not a receiver (T5)
        quiet.call_broker("ping", src="anon-1")
        time.sleep(0.1)  # noqa: the plain bcast subscriptions exist since each broker joined
        b = sender.send(msg("event", "bc-sender", "broadcast", "hello"))
        for p in others:
            _, body = p.recv_until(lambda x: x.get("msg_id") == b["msg_id"], 2 * SLOW)[:2]
        for p in others + [sender, quiet]:
            for frames in p.drain(0.3 * SLOW):
                self.assertNotEqual(json.loads(frames[-1]).get("msg_id"), b["msg_id"],
                                    "a second copy")

    def test_topic_event_crosses(self):
        sub = self.peer("C")
        got = sub.call_broker("subscribe", payload={"topic": "price.*"}, src="sub-c")
        self.assertEqual(got["payload"]["status"], "ok", got)
        pub = self.peer("A", "pricer")
        e = pub.send(msg("event", "pricer", None, "changed", topic="price.eu"))
        _, body = sub.recv(2 * SLOW)
        self.assertEqual(body["msg_id"], e["msg_id"])
        sub.expect_nothing(0.3 * SLOW)
        pub.expect_nothing(0.1)                 # never its own

    def test_watch_and_trace_see_what_arrives_from_other_brokers(self):
        # B3 and B5 across brokers: a watcher or a tracer on C sees the
        # events and broadcasts that reach C from A, and the requests C
        # hands to its instance, as it sees those that enter at C
        sink = self.peer("C", "obs-sink")
        watcher = self.peer("C")
        self.assertEqual(watcher.call_broker("watch")["payload"]["status"], "ok")
        tracer = self.peer("C")
        self.assertEqual(tracer.call_broker("trace", {"rate": 1000})["payload"]["status"], "ok")
        cli = self.peer("A", "till-obs")
        reach(cli, sink, "obs-sink")
        e = cli.send(msg("event", "till-obs", "obs-sink", "sold", payload={"n": 1}))
        b = cli.send(msg("event", "till-obs", "broadcast", "hello"))
        m = cli.request("obs-sink", action="count")
        _, req = sink.recv_until(lambda x: x.get("msg_id") == m["msg_id"], 2 * SLOW)[:2]
        sink.answer(req, {"n": 2})
        cli.recv_answer(m["msg_id"], 2 * SLOW)
        for mid in (e["msg_id"], b["msg_id"]):
            _, copy = watcher.recv_until(lambda x: x.get("msg_id") == mid, 2 * SLOW)[:2]
            self.assertEqual(copy["src"], "till-obs")
        seen = {}
        deadline = time.monotonic() + 2 * SLOW
        while len(seen) < 4 and time.monotonic() < deadline:
            frames = tracer.recv_raw(0.2)
            if frames is None:
                continue
            p = json.loads(frames[-1]).get("payload") or {}
            if p.get("msg_id") in (e["msg_id"], b["msg_id"], m["msg_id"]):
                seen[(p["kind"], p["msg_id"])] = p
        self.assertIn(("event", e["msg_id"]), seen)
        self.assertIn(("event", b["msg_id"]), seen)
        self.assertIn(("request", m["msg_id"]), seen)
        self.assertEqual(seen[("request", m["msg_id"])]["service"], "obs-sink")
        self.assertIn("(bus)", seen[("event", e["msg_id"])]["peer"])

    def test_spoofed_src_is_refused_where_it_enters(self):
        owner = self.peer("A", "kasse")
        svc = self.peer("B", "ledger")
        liar = self.peer("A")
        reach(owner, svc, "ledger")
        before = bus_stats(owner)["requests_out"]
        m = liar.request("ledger", src="kasse")     # a name another connection holds here
        _, body = liar.recv_answer(m["msg_id"], 2 * SLOW)
        self.assertEqual(error_code(body), "spoofed_src", body)
        svc.expect_nothing(0.3 * SLOW)
        self.assertEqual(bus_stats(owner)["requests_out"], before)   # it never crossed

    def test_only_the_handler_answers_across(self):
        svc = self.peer("B", "vault")
        cli = self.peer("A", "till-8")
        other = self.peer("A", "meddler")
        reach(cli, svc, "vault")
        m = cli.request("vault", ttl_ms=int(5000 * SLOW))
        _, req = svc.recv(2 * SLOW)
        fake = other.answer(req, {"fake": True}, src="meddler")
        _, body = other.recv_answer(fake["msg_id"], 2 * SLOW)
        self.assertEqual(error_code(body), "not_your_request", body)
        svc.answer(req, {"real": True})
        _, ans = cli.recv_answer(m["msg_id"], 2 * SLOW)
        self.assertEqual(ans["payload"], {"real": True})

    def test_local_names_never_touch_nats(self):
        svc = self.peer("A", "local-svc")
        cli = self.peer("A", "till-9")
        before = bus_stats(cli)
        for _ in range(5):
            self.assertEqual(round_trip(cli, svc, "local-svc")["type"], "response")
        after = bus_stats(cli)
        for key in ("requests_out", "answers_in", "events_out"):
            self.assertEqual(after[key], before[key], key)

    def test_list_services_shows_other_brokers_names(self):
        self.peer("B", "dir-svc")
        self.peer("B", "dir-svc")
        self.peer("C", "dir-svc")
        cli = self.peer("A", "till-11")
        want = {("dir-svc", "B", 2), ("dir-svc", "C", 1)}
        deadline = time.monotonic() + 5 * SLOW
        while True:
            body = cli.call_broker("list_services")["payload"]
            got = {(e["name"], e["broker"], e["instances"]) for e in body.get("remote", [])}
            if want <= got or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(body["broker_id"], "A")
        self.assertTrue(want <= got, body)
        local = {e["name"] for e in body["services"]}
        self.assertIn("till-11", local)
        self.assertNotIn("dir-svc", local)          # held elsewhere only

    def test_the_config_file_joins_the_bus(self):
        import os
        import tempfile
        from brokerproc import Broker
        from natscluster import wait_bus_connected
        fd, path = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write('nats = "%s"\nbroker_id = "D-from-file"\n' % self.cluster.urls(2))
        svc = self.peer("B", "cfg-svc")
        d = Broker(args=["--config", path])
        try:
            wait_bus_connected(d)
            with d.peer() as cli:
                cli.register("till-d")
                reach(cli, svc, "cfg-svc")
                self.assertEqual(cli.call_broker("stats")["payload"]["bus"]["broker_id"],
                                 "D-from-file")
        finally:
            d.stop()
            os.unlink(path)

    def test_stats_show_the_link(self):
        cli = self.peer("B", "till-10")
        st = bus_stats(cli)
        self.assertEqual(st["broker_id"], "B")
        self.assertTrue(st["connected"])


if __name__ == "__main__":
    unittest.main()
