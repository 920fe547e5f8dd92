"""S1-S3: who may send as whom (docs/protocol.md section 7)."""

from bus import BusTest, env, uname


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
