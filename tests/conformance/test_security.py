"""S1-S3: who may send as whom (docs/protocol.md section 7); error texts (section 15)."""

from bus import BusTest, env, new_id, uname


class WhoMaySend(BusTest):

    def test_S1_registered_connection_sends_only_as_its_names(self):
        svc = self.peer(uname("s1"))
        self.register(svc)
        holder = self.peer(uname("s1other"))
        self.register(holder)
        target, _ = self.service_and_client()
        for src in (uname("free"), holder.name):
            with self.subTest(src=src):
                m = svc.send(env("request", src, "broker", "ping"))
                self.expect_error(svc, "spoofed_src", corr=m["msg_id"])
                m = svc.send(env("event", src, target.name, "note"))
                self.expect_error(svc, "spoofed_src", corr=m["msg_id"])
        self.expect_nothing(target, 0.1, "spoofed events not routed")
        self.assertEqual(self.ping(svc), {svc.name})   # its own name works
        # register/unregister are the exception: src is the name claimed
        extra = uname("s1extra")
        self.register(svc, extra)
        self.assertEqual(self.ping(svc), {svc.name, extra})

    def test_S2_unregistered_connection_may_not_use_a_held_name(self):
        holder = self.peer(uname("s2held"))
        self.register(holder)
        c = self.peer()
        m = c.send(env("request", holder.name, "broker", "ping"))
        self.expect_error(c, "spoofed_src", corr=m["msg_id"])
        m = c.send(env("event", holder.name, "broadcast", "note"))
        self.expect_error(c, "spoofed_src", corr=m["msg_id"])
        self.expect_nothing(holder, 0.1, "spoofed broadcast not routed")
        # any free name is fine, and may change from message to message
        for src in (uname("free"), uname("free")):
            self.assertEqual(self.ping(c, src), set())

    def test_S3_answer_with_spoofed_src_refused(self):
        svc, cli = self.service_and_client()
        other = self.peer(uname("s3other"))
        self.register(other)
        m, got = self.send_request(cli, svc)
        for src in (other.name, uname("free")):
            with self.subTest(src=src):
                bad = self.answer(svc, got.msg, src=src)
                self.expect_error(svc, "spoofed_src", corr=bad["msg_id"])
        self.expect_nothing(cli, what="no spoofed answer delivered")
        self.answer(svc, got.msg)      # the request is still in flight
        self.expect_response(cli, m["msg_id"])

    def test_SEC_error_messages_never_echo_payloads(self):
        # section 15: error message texts are for humans and MUST NOT echo payloads
        mark = "ct-secret-" + new_id()
        held = self.peer(uname("sec"))
        self.register(held)
        c = self.peer(uname("secc"))
        cases = [
            (env("request", c.name, uname("nobody"), "w", {"k": mark}), "no_such_service"),
            (env("event", c.name, uname("nobody"), "w", {"k": mark}), "no_such_service"),
            (env("request", held.name, "broker", "ping", {"k": mark}), "spoofed_src"),
            (env("request", c.name, "broker", "no-such-action", {"k": mark}), "unknown_action"),
            (env("response", c.name, held.name, "w", {"k": mark}, correlation_id=new_id()),
             "unknown_request"),
            (env("request", c.name, "broadcast", "w", {"k": mark}), "bad_envelope"),
            (env("request", c.name, "bad name", "w", {"k": mark}), "bad_name"),
        ]
        for m, code in cases:
            with self.subTest(code=code, type=m["type"]):
                c.send(m)
                r = self.expect_error(c, code, corr=m["msg_id"])
                self.assertNotIn(mark, r["payload"]["message"], r.raw)
        for data, code in ((('{"msg_id":"%s","payload":"%s"' % (new_id(), mark)).encode(), "bad_json"),
                           (('{"msg_id":1,"type":"event","payload":"%s"}' % mark).encode(), "bad_envelope")):
            with self.subTest(code=code):
                c.send_bytes(data)
                r = self.expect_error(c, code)
                self.assertNotIn(mark, r["payload"]["message"], r.raw)
