"""B1: the broker's own service (docs/protocol.md section 8)."""

from bus import BusTest, env, uname


class BrokerService(BusTest):

    ACTIONS = ("ping", "list_services", "stats", "metrics", "reload_policy",
               "dead_letters", "replay", "watch", "unwatch")

    def test_B1_answer_shape(self):
        p = self.peer(uname("b1"))
        for action in ("ping", "list_services", "stats", "metrics", "reload_policy",
                       "dead_letters", "watch", "unwatch"):
            with self.subTest(action=action):
                m = p.send(env("request", p.name, "broker", action))
                r = self.expect_response(p, m["msg_id"], action)
                self.assertEqual((r["src"], r["dst"]), ("broker", p.name))
                self.assertIsInstance(r["payload"], dict)

    def test_B1_ping_lists_this_connections_names(self):
        p = self.peer(uname("b1"))
        self.assertEqual(self.ping(p), set())
        other = uname("b1b")
        self.register(p)
        self.register(p, other)
        self.assertEqual(self.ping(p), {p.name, other})
        q = self.peer(p.name)           # a second instance sees only its own
        self.register(q)
        self.assertEqual(self.ping(q), {p.name})

    def test_B1_list_services_sorted_with_instance_counts(self):
        base = uname("b1")
        names = [base + "-b", base + "-a"]
        a1, a2, b1 = self.peer(names[1]), self.peer(names[1]), self.peer(names[0])
        for p in (a1, a2, b1):
            self.register(p)
        services = self.list_services(a1)
        listed = [s["name"] for s in services]
        self.assertEqual(listed, sorted(listed, key=lambda n: n.encode()), "sorted by name")
        counts = {s["name"]: s["instances"] for s in services}
        self.assertEqual(counts.get(names[1]), 2)
        self.assertEqual(counts.get(names[0]), 1)
        for s in services:
            self.assertEqual(set(s), {"name", "instances"})

    def test_B1_stats_fields(self):
        p = self.peer(uname("b1"))
        st = self.stats(p)
        for k in ("uptime_ms", "peers", "services", "inflight"):
            self.assertIsInstance(st.get(k), int, k)
            self.assertGreaterEqual(st[k], 0, k)
        for k in ("in", "out", "errored", "errors"):
            self.assertIsInstance(st.get(k), dict, k)
            for kk, v in st[k].items():
                self.assertIsInstance(v, int, "%s.%s" % (k, kk))
        for k in ("late_or_unknown", "not_yours", "requester_gone", "broadcast_undelivered"):
            self.assertIsInstance(st["dropped"].get(k), int, "dropped.%s" % k)
        self.assertGreaterEqual(st["in"].get("request", 0), 1)
        self.assertGreaterEqual(st["peers"], 1)
        # counters move: an error shows in errors and errored
        p.send_bytes(b"{")
        self.expect_error(p, "bad_json")
        st2 = self.stats(p)
        self.assertGreaterEqual(st2["errors"].get("bad_json", 0), st["errors"].get("bad_json", 0) + 1)
        self.assertGreaterEqual(st2["in"].get("request", 0), st["in"].get("request", 0) + 1)
        self.assertGreaterEqual(st2["out"].get("response", 0), st["out"].get("response", 0) + 1)
        self.assertGreaterEqual(st2["uptime_ms"], st["uptime_ms"])

    def test_B1_unknown_action(self):
        p = self.peer(uname("b1"))
        for action in ("nope", "PING", ""):
            with self.subTest(action=action):
                m = p.send(env("request", p.name, "broker", action))
                r = self.expect_error(p, "unknown_action", corr=m["msg_id"])
                self.assertEqual(r["action"], action or None)   # T6: "" is echoed as null

    def test_B1_unknown_action_names_the_actions(self):
        # SHOULD: the message names the actions
        p = self.peer(uname("b1"))
        m = p.send(env("request", p.name, "broker", "no_such_action"))
        r = self.expect_error(p, "unknown_action", corr=m["msg_id"])
        text = r["payload"]["message"]
        for action in self.ACTIONS:
            self.assertIn(action, text, "unknown_action's message names %s: %r" % (action, text))

    def test_B1_broker_requests_are_not_tracked(self):
        # not in flight: the same msg_id twice is answered twice (no
        # duplicate_msg_id), ttl_ms plays no part, metrics do not count them
        p = self.peer(uname("b1"))
        m = env("request", p.name, "broker", "ping", ttl_ms=1)
        for _ in range(2):
            p.send(m)
            self.expect_response(p, m["msg_id"], "ping")
        self.expect_nothing(p, 0.1, "no timeout for a broker request")
        series = self.call_broker(p, "metrics")["payload"]["series"]
        self.assertFalse([x for x in series if x.get("service") == "broker"], series)

    def test_B1_metrics_series(self):
        svc, cli = self.service_and_client()
        m, got = self.send_request(cli, svc, action="price")
        self.answer(svc, got.msg)
        self.expect_response(cli, m["msg_id"])
        nobody = uname("nobody")
        f = cli.send(env("request", cli.name, nobody, "price"))
        self.expect_error(cli, "no_such_service", corr=f["msg_id"])
        r = self.call_broker(cli, "metrics")
        self.assertLessEqual({"series", "topics"}, set(r["payload"]), r.raw)   # B1: a broker MAY add keys
        by_key = {(x["service"], x["action"]): x for x in r["payload"]["series"]}
        ok = by_key.get((svc.name, "price"))
        self.assertIsNotNone(ok, r.raw)
        self.assertEqual((ok["requests"], ok["answered"], ok["failed"]), (1, 1, 0), ok)
        lat = ok["latency_ms"]
        self.assertEqual(set(lat), {"p50_le", "p99_le", "mean"}, ok)
        for k, v in lat.items():
            self.assertIsInstance(v, (int, float), k)
            self.assertGreater(v, 0, k)
        self.assertLessEqual(lat["p50_le"], lat["p99_le"])
        # a request refused because no service has the name makes no series
        self.assertNotIn((nobody, "price"), by_key, r.raw)

    def test_B1_reload_policy_answer(self):
        # The suite's broker runs without a policy: "error" is expected then,
        # but either form is conforming.
        p = self.peer(uname("b1"))
        body = self.call_broker(p, "reload_policy")["payload"]
        self.assertIn(body.get("status"), ("ok", "error"), body)
        key = "hooks" if body["status"] == "ok" else "message"
        self.assertIsInstance(body.get(key), str, body)

    def test_B1_watch_and_unwatch_answer_ok(self):
        p = self.peer(uname("b1"))
        for action in ("watch", "watch", "unwatch", "unwatch"):     # idempotent
            self.assertEqual(self.call_broker(p, action)["payload"], {"status": "ok"})
