"""B1: the broker's own service (docs/protocol.md section 8)."""

from bus import BusTest, env, uname


class BrokerService(BusTest):

    def test_B1_answer_shape(self):
        p = self.peer(uname("b1"))
        for action in ("ping", "list_services", "stats"):
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
        for k in ("late_or_unknown", "not_yours", "requester_gone"):   # a broker MAY add more
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
