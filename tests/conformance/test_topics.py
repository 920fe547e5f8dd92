"""TP1-TP5: topics, subscriptions and topic events (docs/protocol.md section
8a). Every test uses topics under a token of its own, so the suite can run
against a broker others use."""

import uuid

from bus import BusTest, env, t, uname


def root():
    """A first token no other test (or user) publishes under."""
    return "ct%s" % uuid.uuid4().hex[:12]


class Topics(BusTest):

    def subscribe(self, p, topic, group=None, action="subscribe"):
        payload = {"topic": topic}
        if group is not None:
            payload["group"] = group
        return self.call_broker(p, action, payload=payload)["payload"]

    def subscriber(self, *patterns, group=None, shape=2):
        p = self.peer(uname("psub"), shape)
        for pattern in patterns:
            got = self.subscribe(p, pattern, group)
            self.assertEqual(got["status"], "ok", got)
        return p

    def publish(self, p, topic, action="e", payload=None):
        return p.send(env("event", p.name, None, action, payload, topic=topic))

    def received(self, p, timeout=0.3):
        got = []
        while True:
            r = p.recv(t(timeout) if not got else t(0.1))
            if r is None:
                return got
            got.append(r)

    def test_TP1_pattern_syntax(self):
        p = self.peer(uname("psyn"))
        r = root()
        for good in (r, r + ".a", r + ".*", r + ".>", r + ".*.b-c_d:e", "*", ">"):
            with self.subTest(pattern=good):
                self.assertEqual(self.subscribe(p, good)["status"], "ok")
        for bad in ("", ".", r + ".", "." + r, r + "..a", r + ".>.a", r + ".a*", r + ".a>",
                    r + ".a b", r + ".a/b", r + ".caf\u00e9", ".".join([r] * 17), "a" * 256):
            with self.subTest(pattern=bad):
                got = self.subscribe(p, bad)
                self.assertEqual((got["status"], got.get("code")), ("error", "bad_topic"), got)
                self.assertIsInstance(got.get("message"), str)
        for payload in (None, {}, {"topic": 3}, {"topic": r, "group": "bad group"}):
            with self.subTest(payload=payload):
                got = self.call_broker(p, "subscribe", payload=payload)["payload"]
                self.assertEqual(got["status"], "error", got)

    def test_TP2_a_topic_event_names_no_dst(self):
        s = self.peer(uname("ppub"))
        r = root()
        cases = [
            env("event", s.name, uname("svc"), "e", topic=r + ".a"),     # both
            env("request", s.name, "broker", "ping", topic=r + ".a"),    # not an event
            env("event", s.name, None, "e", topic=r + ".*"),             # wildcard
            env("event", s.name, None, "e", topic=r + "..a"),
            env("event", s.name, None, "e", topic=5),
            env("event", s.name, None, "e", topic=""),
        ]
        for m in cases:
            with self.subTest(m=m):
                s.send(m)
                self.expect_error(s, "bad_envelope", corr=m["msg_id"])
        # dst null with a topic is the same as no dst
        sub = self.subscriber(r + ".a")
        m = env("event", s.name, None, "e", topic=r + ".a")
        s.send_bytes(('{"msg_id":"%s","type":"event","src":"%s","dst":null,"action":"e",'
                      '"topic":"%s"}' % (m["msg_id"], s.name, r + ".a")).encode())
        self.assertEqual(self.expect(sub)["msg_id"], m["msg_id"])

    def test_TP3_wildcards_and_once_per_connection(self):
        r = root()
        exact = self.subscriber(r + ".order.created")
        star = self.subscriber(r + ".order.*")
        tail = self.subscriber(r + ".>")
        many = self.subscriber(r + ".order.created", r + ".order.*", r + ".>", r + ".*.created")
        s = self.peer(uname("ppub"))
        for topic, who in ((r + ".order.created", {exact, star, tail, many}),
                           (r + ".order.cancelled", {star, tail, many}),
                           (r + ".order.created.eu", {tail, many}),
                           (r + ".stock.created", {tail, many}),
                           (r, set())):
            with self.subTest(topic=topic):
                m = self.publish(s, topic, payload={"t": topic})
                for p in (exact, star, tail, many):
                    got = self.received(p)
                    want = 1 if p in who else 0
                    self.assertEqual(len(got), want, "%s: %r" % (p.name, got))
                    if want:
                        self.assertEqual(got[0]["msg_id"], m["msg_id"])
                        self.assertEqual(got[0]["topic"], topic)
                        self.assertEqual(got[0]["payload"], {"t": topic})
        self.expect_nothing(s, 0.1, "no error for a topic nobody holds")

    def test_TP3_bytes_as_sent_in_each_shape(self):
        r = root()
        two, three = self.subscriber(r + ".x", shape=2), self.subscriber(r + ".x", shape=3)
        s = self.peer(uname("ppub"))
        m = env("event", s.name, None, "e", {"k": [1, 2.5]}, topic=r + ".x")
        data = ('{"msg_id":"%s","type":"event","src":"%s","dst":null,"action":"e",'
                '"payload":{"k":[1, 2.50]},"topic":"%s","x-extra":1}'
                % (m["msg_id"], s.name, r + ".x")).encode()
        s.send_bytes(data)
        self.assertEqual(self.expect(two).frames, [data])
        self.assertEqual(self.expect(three).frames, [b"", data])

    def test_TP3_the_sender_gets_no_copy(self):
        r = root()
        s = self.subscriber(r + ".>")
        other = self.subscriber(r + ".>")
        m = self.publish(s, r + ".a")
        self.assertEqual(self.expect(other)["msg_id"], m["msg_id"])
        self.expect_nothing(s, 0.2, "not its own event")

    def test_TP3_queue_group_one_member_each(self):
        r = root()
        group = uname("grp")
        members = [self.subscriber(r + ".job.*", group=group) for _ in range(3)]
        plain = self.subscriber(r + ".job.*")
        s = self.peer(uname("ppub"))
        n = 30
        sent = [self.publish(s, r + ".job.run", payload={"i": i})["msg_id"] for i in range(n)]
        counts = []
        seen = []
        for p in members:
            got = self.received(p, 0.5)
            counts.append(len(got))
            seen += [g["msg_id"] for g in got]
        self.assertEqual(sorted(seen), sorted(sent), "each event to exactly one member")
        self.assertTrue(all(c > 0 for c in counts), counts)
        self.assertEqual(len(self.received(plain, 0.5)), n, "plain subscribers get every event")

    def test_TP4_idempotent_unsubscribe_and_list(self):
        r = root()
        p = self.peer(uname("plist"))
        first = self.subscribe(p, r + ".a")
        again = self.subscribe(p, r + ".a")
        self.assertEqual((first["subscriptions"], again["subscriptions"]), (1, 1))
        self.assertEqual(self.subscribe(p, r + ".a", group="g")["subscriptions"], 2)
        listed = self.call_broker(p, "subscriptions")["payload"]["subscriptions"]
        self.assertCountEqual(listed, [{"topic": r + ".a"}, {"topic": r + ".a", "group": "g"}])
        s = self.peer(uname("ppub"))
        self.publish(s, r + ".a")
        self.assertEqual(len(self.received(p)), 1, "once for the plain and the group subscription")
        self.assertEqual(self.subscribe(p, r + ".a", action="unsubscribe")["status"], "ok")
        gone = self.subscribe(p, r + ".a", action="unsubscribe")
        self.assertEqual((gone["status"], gone.get("code")), ("error", "not_subscribed"))
        self.assertEqual(self.subscribe(p, r + ".a", group="g", action="unsubscribe")["status"], "ok")
        self.publish(s, r + ".a")
        self.expect_nothing(p, 0.2, "nothing after unsubscribe")

    def test_TP5_subscriptions_end_with_the_connection(self):
        r = root()
        group = uname("grp")
        leaving = self.subscriber(r + ".a", group=group)
        staying = self.subscriber(r + ".a", group=group)
        leaving.close()
        s = self.peer(uname("ppub"))

        def all_reach_staying():
            self.received(staying, 0.05)
            ids = [self.publish(s, r + ".a")["msg_id"] for _ in range(4)]
            return [g["msg_id"] for g in self.received(staying, 0.3)] == ids
        self.assertTrue(self.wait_until(all_reach_staying, timeout=t(5)),
                        "the group's member that left gets nothing")

    def test_TP_seed_events_keep_their_meaning(self):
        svc, s = self.service_and_client()
        sub = self.subscriber(">")
        m = s.send(env("event", s.name, svc.name, "e"))
        self.assertEqual(self.expect(svc)["msg_id"], m["msg_id"])
        got = [g for g in self.received(sub, 0.2) if g.get("msg_id") == m["msg_id"]]
        self.assertEqual(got, [], "an event to a dst is not a topic event")
