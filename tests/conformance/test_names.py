"""N1-N2: names (docs/protocol.md section 5); N3, N4: test_profile_curve.py, test_profile_policy.py."""

from bus import BusTest, env, new_id, uname


class Names(BusTest):

    BAD = {
        "empty": "",
        "space": "a b",
        "65 bytes": "n" * 65,
        "leading dash": "-abc",
        "leading dot": ".abc",
        "leading underscore": "_abc",
        "slash": "a/b",
        "non-ascii": "caf\u00e9",
        "look-alike": "p\u0430yment",  # Cyrillic a
        "NUL": "a\u0000b",
        "newline": "a\nb",
    }

    def test_N1_bad_names_refused_on_register(self):
        p = self.peer()
        for label, name in self.BAD.items():
            with self.subTest(label):
                m = p.send(env("register", name, "broker", "register"))
                r = self.expect_error(p, "bad_name", corr=m["msg_id"])
                self.assertIsNone(r.get("dst"), r.raw)
        self.assertEqual(self.ping(p, uname("n1")), set())

    def test_N1_escaped_name_refused(self):
        p = self.peer()
        for raw in ('\\u0061bc', 'ab\\u002ec', 'a\\/b'):
            with self.subTest(raw=raw):
                mid = new_id()
                p.send_bytes(('{"msg_id":"%s","type":"register","src":"%s","dst":"broker","action":"register"}'
                              % (mid, raw)).encode())
                self.expect_error(p, "bad_name", corr=mid)
        self.assertEqual(self.ping(p, uname("n1")), set())

    def test_N1_bad_names_refused_as_src_and_dst(self):
        p = self.peer()
        for label, name in self.BAD.items():
            with self.subTest("src " + label):
                m = p.send(env("request", name, "broker", "ping"))
                self.expect_error(p, "bad_name", corr=m["msg_id"])
            with self.subTest("dst " + label):
                m = p.send(env("request", uname("n1"), name, "work"))
                self.expect_error(p, "bad_name", corr=m["msg_id"])
        mid = new_id()
        p.send_bytes(('{"msg_id":"%s","type":"event","src":"%s","dst":"\\u0062roker","action":"x"}'
                      % (mid, uname("n1"))).encode())
        self.expect_error(p, "bad_name", corr=mid)

    def test_N1_good_names_accepted(self):
        p = self.peer()
        suffix = new_id()[:8]
        for name in ("a" + suffix, "9" + suffix, "ct.a:b-c_d." + suffix, "Z" * 56 + suffix):
            with self.subTest(name=name):
                self.register(p, name)
        self.assertEqual(len("Z" * 56 + suffix), 64)

    def test_N2_reserved_names_refused(self):
        p = self.peer()
        for name in ("broker", "broadcast", "broker.x", "broker.dlq", "smartshop.echo", "smartshop.x"):
            with self.subTest(register=name):
                m = p.send(env("register", name, "broker", "register"))
                self.expect_error(p, "reserved_name", corr=m["msg_id"])
            with self.subTest(src=name):
                m = p.send(env("request", name, "broker", "ping"))
                self.expect_error(p, "reserved_name", corr=m["msg_id"])
        self.assertEqual(self.ping(p, uname("n2")), set())
        # only the exact names and the dotted prefixes are reserved
        self.register(p, "brokerage-" + new_id()[:8])
        self.register(p, "smartshopper-" + new_id()[:8])

    def test_N2_reserved_src_refused_for_every_type(self):
        p = self.peer()
        target = uname("n2t")
        for name in ("broker", "broadcast", "broker.x", "smartshop.x"):
            for m in (env("request", name, target, "w"),
                      env("response", name, target, "w", correlation_id=new_id()),
                      env("error", name, target, "w", correlation_id=new_id()),
                      env("event", name, target, "w"),
                      env("event", name, "broadcast", "w"),
                      env("unregister", name, "broker", "unregister")):
                with self.subTest(type=m["type"], src=name, dst=m.get("dst")):
                    p.send(m)
                    self.expect_error(p, "reserved_name", corr=m["msg_id"])

    def test_N2_reserved_dst_refused(self):
        p = self.peer()
        src = uname("n2")
        for name in ("broker.x", "broker.dlq", "smartshop.x"):
            for m in (env("request", src, name, "w"), env("event", src, name, "w"),
                      env("response", src, name, "w", correlation_id=new_id())):
                with self.subTest(type=m["type"], dst=name):
                    p.send(m)
                    self.expect_error(p, "reserved_name", corr=m["msg_id"])
