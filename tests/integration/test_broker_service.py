#!/usr/bin/python3
"""The broker's own service, dst "broker" (B1): ping, list_services, stats;
broker-made messages carry a libuuid msg_id and a millisecond UTC timestamp (T7)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

STATS_KEYS = {"uptime_ms", "peers", "services", "inflight", "in", "out", "errored", "errors",
              "dropped"}


class BrokerServiceTest(bp.BrokerTestCase):
    def assertBrokerAnswer(self, body, request, action):
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["src"], "broker")
        self.assertEqual(body["dst"], request["src"])
        self.assertEqual(body["action"], action)
        self.assertEqual(body["correlation_id"], request["msg_id"])
        self.assertRegex(body["msg_id"], bp.UUID_RE)
        self.assertRegex(body["timestamp"], bp.TIMESTAMP_RE)

    def call(self, p, action, src="svc-client"):
        m = p.request("broker", action, src=src)
        _, body = p.recv_answer(m["msg_id"])
        self.assertBrokerAnswer(body, m, action)
        return body["payload"]

    def test_ping_answers_ok_with_no_names_for_a_plain_client(self):
        self.assertEqual(self.call(self.peer(), "ping"), {"status": "ok", "registered": []})

    def test_ping_lists_the_names_this_connection_holds(self):
        p = self.peer(register="pinger-b")
        p.register("pinger-a")
        self.peer(register="someone-else-b")
        payload = self.call(p, "ping", src="pinger-b")
        self.assertEqual(payload["status"], "ok")
        self.assertEqual(sorted(payload["registered"]), ["pinger-a", "pinger-b"])

    def test_list_services_names_and_counts_sorted_by_name(self):
        for name, n in (("zeta-svc", 1), ("alpha-svc", 2), ("mid-svc", 3)):
            for i in range(n):
                self.peer(identity="%s-%d" % (name, i), register=name)
        payload = self.call(self.peer(), "list_services")
        names = [s["name"] for s in payload["services"]]
        self.assertEqual(names, sorted(names), "not sorted by name")
        got = {s["name"]: s["instances"] for s in payload["services"]}
        self.assertEqual(got.get("alpha-svc"), 2)
        self.assertEqual(got.get("mid-svc"), 3)
        self.assertEqual(got.get("zeta-svc"), 1)
        self.assertNotIn("broker", got)

    def test_stats_has_the_documented_keys(self):
        payload = self.call(self.peer(), "stats")
        self.assertTrue(STATS_KEYS <= set(payload), "missing %s" % (STATS_KEYS - set(payload)))
        for k in ("uptime_ms", "peers", "services", "inflight"):
            self.assertIsInstance(payload[k], int, k)
        self.assertTrue({"late_or_unknown", "not_yours", "requester_gone"}
                        <= set(payload["dropped"]), payload["dropped"])

    def test_stats_counts_messages_in_and_out_by_type(self):
        p = self.peer()
        before = self.call(p, "stats")
        svc = self.peer(register="counted-svc")
        for _ in range(5):
            req = p.request("counted-svc", "do", src="counter")
            _, got = svc.recv()
            svc.answer(got)
            p.recv_answer(req["msg_id"])
        after = self.call(p, "stats")
        self.assertGreaterEqual(after["in"].get("request", 0) - before["in"].get("request", 0), 6)
        self.assertGreaterEqual(after["in"].get("response", 0) - before["in"].get("response", 0), 5)
        self.assertGreaterEqual(after["in"].get("register", 0) - before["in"].get("register", 0), 1)
        self.assertGreaterEqual(after["out"].get("request", 0) - before["out"].get("request", 0), 5)
        self.assertGreaterEqual(after["out"].get("response", 0) - before["out"].get("response", 0),
                                6)

    def test_stats_counts_errors_by_code(self):
        p = self.peer()
        before = self.call(p, "stats")
        p.send(b"{broken")
        p.recv()
        p.request("nobody-counted", "do", src="err-counter")
        p.recv()
        after = self.call(p, "stats")
        self.assertEqual(after["errors"].get("bad_json", 0), before["errors"].get("bad_json", 0) + 1)
        self.assertEqual(after["errors"].get("no_such_service", 0),
                         before["errors"].get("no_such_service", 0) + 1)
        self.assertGreaterEqual(sum(after["errored"].values()) - sum(before["errored"].values()), 1)

    def test_stats_counts_unknown_and_not_yours(self):
        p = self.peer(register="dropper")
        before = self.call(p, "stats", src="dropper")["dropped"]
        p.send(bp.msg("response", "dropper", "x", "do", correlation_id="never-" + bp.new_id()))
        p.recv()
        after = self.call(p, "stats", src="dropper")["dropped"]
        self.assertEqual(after["late_or_unknown"], before["late_or_unknown"] + 1)

    def test_stats_shows_services_and_inflight(self):
        svc = self.peer(register="holding-svc")
        p = self.peer()
        before = self.call(p, "stats")
        p.request("holding-svc", "wait", src="inflight-client")
        _, got = svc.recv()
        during = self.call(p, "stats")
        self.assertEqual(during["inflight"], before["inflight"] + 1)
        self.assertGreaterEqual(during["services"], 1)
        svc.answer(got)
        p.recv()
        self.assertEqual(self.call(p, "stats")["inflight"], before["inflight"])

    def test_uptime_grows(self):
        p = self.peer()
        a = self.call(p, "stats")["uptime_ms"]
        time.sleep(0.2)
        b = self.call(p, "stats")["uptime_ms"]
        self.assertGreaterEqual(b - a, 150)

    def test_broker_msg_ids_are_unique_lowercase_uuids(self):
        p = self.peer()
        ids = set()
        for _ in range(20):
            m = p.request("broker", "ping", src="uuid-client")
            _, body = p.recv_answer(m["msg_id"])
            self.assertRegex(body["msg_id"], bp.UUID_RE)
            ids.add(body["msg_id"])
        self.assertEqual(len(ids), 20)

    def test_unknown_action_is_unknown_action(self):
        p = self.peer()
        m = p.request("broker", "reboot_everything", src="curious")
        self.expectError(p, "unknown_action", correlation_id=m["msg_id"])

    def test_event_to_broker_gets_no_answer_or_an_error_but_no_crash(self):
        p = self.peer()
        p.send(bp.msg("event", "ev-to-broker", "broker", "ping"))
        frames = p.recv_raw(0.3)
        if frames is not None:
            self.assertEqual(bp.loads(frames[-1])["type"], "error")
        self.assertAlive()


if __name__ == "__main__":
    bp.main()
