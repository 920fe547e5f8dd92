"""F1-F4: frames (docs/protocol.md section 3)."""

import zmq

from bus import BusTest, Peer, env, enc, uname, CONFIG


class Frames(BusTest):

    def test_F1_two_and_three_frame_shapes_accepted(self):
        for shape in (2, 3):
            with self.subTest(shape=shape):
                p = self.peer(uname("f1"), shape)
                self.assertEqual(self.ping(p), set())
        # a real REQ socket (adds the empty delimiter itself)
        req = self.peer(uname("f1req"), socket_type=zmq.REQ)
        m = env("request", req.name, "broker", "ping")
        req.sock.send(enc(m))
        r = self.expect(req, what="ping answer on a REQ socket")
        self.assertEqual(r.get("correlation_id"), m["msg_id"])

    def test_F2_answers_in_the_senders_shape(self):
        p = self.peer(uname("f2"))
        for shape in (2, 3, 2):  # the most recent message's shape wins
            m = p.send(env("request", p.name, "broker", "ping"), shape)
            r = self.expect_response(p, m["msg_id"])
            want = 1 if shape == 2 else 2
            self.assertEqual(len(r.frames), want, "sent shape %d, got %r" % (shape, r.frames))
            if shape == 3:
                self.assertEqual(r.frames[0], b"")

    def test_F2_forwarded_messages_in_the_receivers_shape(self):
        for svc_shape, cli_shape in ((3, 2), (2, 3)):
            with self.subTest(service=svc_shape, client=cli_shape):
                svc, cli = self.service_and_client(svc_shape, cli_shape)
                m, got = self.send_request(cli, svc)
                self.assertEqual(len(got.frames), svc_shape - 1, got.frames)
                self.answer(svc, got.msg)
                r = self.expect_response(cli, m["msg_id"])
                self.assertEqual(len(r.frames), cli_shape - 1, r.frames)

    def test_F3_bad_frames_answered_never_a_crash(self):
        cases = [[b"x", b"y"], [b""], [b"", b""], [b"", b"{}", b"{}"],
                 [b"", b"", enc(env("request", "a", "broker", "ping"))]]
        for frames in cases:
            with self.subTest(frames=frames):
                p = self.peer()
                p.send_frames(frames)
                r = self.expect_error(p, "bad_frames", corr=None)
                self.assertIsNone(r.get("dst"), r.raw)
        self.assert_alive()

    def test_F4_json_is_the_last_frame_after_empty_frames_only(self):
        p = self.peer(uname("f4"), 3)
        self.register(p)
        p.send_frames([b"", b"not json"])
        r = self.expect_error(p, "bad_json")
        for f in r.frames[:-1]:
            self.assertEqual(f, b"", r.frames)
