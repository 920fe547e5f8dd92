"""T1-T7: message types, events and broadcast, broker errors (docs/protocol.md section 6); T8: test_profile_lua.py."""

import collections
import datetime

from bus import BusTest, env, new_id, uname, UUID_RE, TS_RE, ERROR_KEYS


class Types(BusTest):

    def test_T1_register_answer_shape(self):
        name = uname("t1")
        p = self.peer(name)
        m = p.send(env("register", name, "broker", "register", {}, timestamp="2024-01-01T00:00:00.000Z"))
        r = self.expect_response(p, m["msg_id"], "register")
        self.assertEqual(r["src"], "broker")
        self.assertEqual(r["dst"], name)
        self.assertEqual(r["payload"], {"status": "ok", "name": name})
        self.assertEqual(self.ping(p), {name})

    def test_T1_register_idempotent_instances_and_several_names(self):
        name, other = uname("t1"), uname("t1b")
        a = self.peer(name)
        self.register(a)
        self.register(a)                      # idempotent
        self.assertEqual(self.instances(a, name), 1)
        b = self.peer(name)
        self.register(b)                      # a second instance
        self.assertEqual(self.instances(a, name), 2)
        self.register(a, other)               # one connection, several names
        self.assertEqual(self.ping(a), {name, other})
        self.assertEqual(self.ping(b), {name})

    def test_T2_unregister(self):
        name, other = uname("t2"), uname("t2b")
        p = self.peer(name)
        self.register(p)
        self.register(p, other)
        m = p.send(env("unregister", name, "broker", "unregister"))
        r = self.expect_response(p, m["msg_id"], "unregister")
        self.assertEqual(r["src"], "broker")
        self.assertEqual(r["dst"], name)
        self.assertEqual(r["payload"], {"status": "ok", "name": name})
        self.assertEqual(self.ping(p, other), {other})
        c = self.peer(uname("cli"))
        m = c.send(env("request", c.name, name, "work"))
        self.expect_error(c, "no_such_service", corr=m["msg_id"])
        # a name not held: neither never registered, nor held by another connection
        m = p.send(env("unregister", name, "broker", "unregister"))
        self.expect_error(p, "not_registered", corr=m["msg_id"])
        q = self.peer(uname("t2q"))
        self.register(q)
        m = p.send(env("unregister", q.name, "broker", "unregister"))
        self.expect_error(p, "not_registered", corr=m["msg_id"])
        self.assertEqual(self.ping(q), {q.name})

    def test_T3_request_round_robin_to_exactly_one_instance(self):
        name = uname("t3")
        a, b = self.peer(name), self.peer(name)
        self.register(a)
        self.register(b)
        c = self.peer(uname("cli"))
        sent = [c.send(env("request", c.name, name, "work", {"i": i}))["msg_id"] for i in range(6)]
        got = collections.defaultdict(list)
        for svc, label in ((a, "a"), (b, "b")):
            while True:
                r = svc.recv(0.3)
                if r is None:
                    break
                got[label].append(r["msg_id"])
        self.assertEqual(sorted(got["a"] + got["b"]), sorted(sent), "each request delivered exactly once")
        self.assertEqual((len(got["a"]), len(got["b"])), (3, 3), "round-robin over two instances")
        order = ["a" if i in got["a"] else "b" for i in sent]
        self.assertTrue(all(order[i] != order[i + 1] for i in range(5)), "alternating: %s" % order)

    def test_T3_duplicate_msg_id_in_flight(self):
        svc, cli = self.service_and_client()
        m, got = self.send_request(cli, svc)
        cli.send(dict(m, payload={"again": True}))
        self.expect_error(cli, "duplicate_msg_id", corr=m["msg_id"])
        other = self.peer(uname("cli2"))
        other.send(dict(m, src=other.name))
        self.expect_error(other, "duplicate_msg_id", corr=m["msg_id"])
        self.expect_nothing(svc, what="no second delivery")
        self.answer(svc, got.msg)
        self.expect_response(cli, m["msg_id"])

    def test_T3_no_such_service_at_once(self):
        c = self.peer(uname("cli"))
        m = c.send(env("request", c.name, uname("nobody"), "work"))
        self.expect_error(c, "no_such_service", corr=m["msg_id"], timeout=0.5)

    def test_T3_request_to_broadcast_is_bad_envelope(self):
        svc, cli = self.service_and_client()
        m = cli.send(env("request", cli.name, "broadcast", "work"))
        self.expect_error(cli, "bad_envelope", corr=m["msg_id"])
        self.expect_nothing(svc)

    def test_T4_response_routed_by_correlation_id_whatever_dst(self):
        svc, cli = self.service_and_client()
        m, got = self.send_request(cli, svc)
        ans = self.answer(svc, got.msg, dst=uname("elsewhere"))
        r = self.expect_response(cli, m["msg_id"])
        self.assertEqual(r["msg_id"], ans["msg_id"])
        # an error from the handler is routed the same way
        m, got = self.send_request(cli, svc)
        svc.send(env("error", svc.name, cli.name, "work", {"code": "app_failed", "message": "x"},
                     correlation_id=m["msg_id"]))
        r = self.expect(cli)
        self.assertEqual((r["type"], r["src"], r["correlation_id"]), ("error", svc.name, m["msg_id"]))

    def test_T4_response_only_from_handler(self):
        svc, cli = self.service_and_client()
        before = self.stats(cli)["dropped"]["not_yours"]
        m, got = self.send_request(cli, svc)
        for kind in ("response", "error"):
            intruder = self.peer(uname("intruder"))
            bad = intruder.send(env(kind, intruder.name, cli.name, "work", {"fake": True},
                                    correlation_id=m["msg_id"]))
            self.expect_error(intruder, "not_your_request", corr=bad["msg_id"])
        self.expect_nothing(cli, what="no answer from a non-handler")
        self.assertGreaterEqual(self.stats(cli)["dropped"]["not_yours"], before + 2)
        self.answer(svc, got.msg)                 # the handler still can
        self.expect_response(cli, m["msg_id"])

    def test_T4_unknown_and_second_answers(self):
        svc, cli = self.service_and_client()
        before = self.stats(cli)["dropped"]["late_or_unknown"]
        a = svc.send(env("response", svc.name, cli.name, "work", correlation_id=new_id()))
        self.expect_error(svc, "unknown_request", corr=a["msg_id"])
        m, got = self.send_request(cli, svc)
        self.answer(svc, got.msg)
        self.expect_response(cli, m["msg_id"])
        a2 = self.answer(svc, got.msg)
        self.expect_error(svc, "unknown_request", corr=a2["msg_id"])
        self.expect_nothing(cli, what="no second answer")
        # a request to the broker's own service is answered at once, never in flight
        p = cli.send(env("request", cli.name, "broker", "ping"))
        self.expect_response(cli, p["msg_id"])
        a3 = svc.send(env("response", svc.name, cli.name, "ping", correlation_id=p["msg_id"]))
        self.expect_error(svc, "unknown_request", corr=a3["msg_id"])
        self.assertGreaterEqual(self.stats(cli)["dropped"]["late_or_unknown"], before + 3)

    def test_T5_event_to_one_instance_no_answer(self):
        name = uname("t5")
        a, b = self.peer(name), self.peer(name)
        self.register(a)
        self.register(b)
        c = self.peer(uname("cli"))
        ids = [c.send(env("event", c.name, name, "note", {"i": i}))["msg_id"] for i in range(4)]
        got = []
        for svc in (a, b):
            n = 0
            while True:
                r = svc.recv(0.3)
                if r is None:
                    break
                got.append(r["msg_id"])
                n += 1
            self.assertEqual(n, 2, "round-robin of events")
        self.assertEqual(sorted(got), sorted(ids))
        self.expect_nothing(c, 0.1, "no answer to a delivered event")
        m = c.send(env("event", c.name, uname("nobody"), "note"))
        self.expect_error(c, "no_such_service", corr=m["msg_id"])

    def test_T5_broadcast_reaches_each_registered_connection_once_not_sender(self):
        sender = self.peer(uname("bsend"))
        self.register(sender)
        multi = self.peer(uname("bmulti"), 3)
        self.register(multi)
        self.register(multi, uname("bmulti2"))
        shared = uname("bshared")
        s1, s2 = self.peer(shared), self.peer(shared)
        self.register(s1)
        self.register(s2)
        plain = self.peer(uname("bplain"))      # never registered
        self.ping(plain)
        refused = self.peer()                   # its only registration refused
        m = refused.send(env("register", "broker", "broker", "register"))
        self.expect_error(refused, "reserved_name", corr=m["msg_id"])
        dropped = self.peer(uname("bdrop"))     # registered then unregistered
        self.register(dropped)
        u = dropped.send(env("unregister", dropped.name, "broker", "unregister"))
        self.expect_response(dropped, u["msg_id"])

        ev = sender.send(env("event", sender.name, "broadcast", "hello", {"x": 1}))
        for p in (multi, s1, s2):
            r = self.expect(p, what="the broadcast")
            self.assertEqual(r["msg_id"], ev["msg_id"])
            self.assertEqual(len(r.frames), p.shape - 1)
        self.expect_nothing_all([multi, s1, s2], 0.2, "exactly one copy each")
        self.expect_nothing_all([sender, plain, refused, dropped], 0, "no copy for the sender or unregistered")

    def test_T5_broadcast_with_no_receivers_is_not_an_error(self):
        # On a private broker nobody else is registered; on a shared one this
        # still checks that the sender gets no error.
        p = self.peer(uname("blone"))
        self.register(p)
        p.send(env("event", p.name, "broadcast", "hello"))
        self.expect_nothing(p, what="no error for a broadcast")

    def check_error_shape(self, r):
        m = r.msg
        self.assertEqual(set(m), ERROR_KEYS, r.raw)
        self.assertRegex(m["msg_id"], UUID_RE)
        self.assertRegex(m["timestamp"], TS_RE)
        self.assertEqual(set(m["payload"]), {"code", "message"}, r.raw)

    def test_T6_error_shape(self):
        c = self.peer(uname("cli"))
        m = c.send(env("request", c.name, uname("nobody"), "get_info", {"k": 1}))
        r = self.expect_error(c, "no_such_service", corr=m["msg_id"])
        self.check_error_shape(r)
        self.assertEqual((r["dst"], r["action"]), (c.name, "get_info"))
        # nothing readable: dst, action, correlation_id all null
        c.send_bytes(b'{"msg_id":"x","src":"y"')
        r = self.expect_error(c, "bad_json", corr=None)
        self.check_error_shape(r)
        self.assertEqual((r["dst"], r["action"]), (None, None))
        # an invalid msg_id: correlation_id null; an invalid src: dst null
        c.send(env("request", c.name, "broker", "ping", msg_id="bad id"))
        r = self.expect_error(c, "bad_envelope", corr=None)
        self.check_error_shape(r)
        self.assertEqual(r["dst"], c.name)
        m = c.send(env("request", "bad name", "broker", "ping"))
        r = self.expect_error(c, "bad_name", corr=m["msg_id"])
        self.check_error_shape(r)
        self.assertIsNone(r["dst"])
        # a non-string action: null
        c.send(env("event", c.name, uname("x"), 42))
        r = self.expect_error(c, "bad_envelope")
        self.check_error_shape(r)
        self.assertIsNone(r["action"])
        # an action written with escapes, or longer than 128 bytes: null
        for action in ('get\\u005finfo', "a" * 129):
            mid = new_id()
            c.send_bytes(('{"msg_id":"%s","type":"request","src":"%s","dst":"%s","action":"%s"}'
                          % (mid, c.name, uname("nobody"), action)).encode())
            r = self.expect_error(c, "no_such_service", corr=mid)
            self.assertIsNone(r["action"], r.raw)

    def test_T7_broker_made_msg_id_and_timestamp(self):
        p = self.peer(uname("t7"))
        r1 = self.register(p)
        r2 = self.call_broker(p, "ping")
        p.send_bytes(b"nope")
        r3 = self.expect_error(p, "bad_json")
        ids = set()
        for r in (r1, r2, r3):
            self.assertRegex(r["msg_id"], UUID_RE)
            self.assertRegex(r["timestamp"], TS_RE)
            ts = datetime.datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            self.assertLess(abs((now - ts).total_seconds()), 300, "timestamp is UTC now: %s" % r["timestamp"])
            ids.add(r["msg_id"])
        self.assertEqual(len(ids), 3, "fresh msg_id per message")
