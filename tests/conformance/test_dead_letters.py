"""B2: dead letters, dead_letters and replay (docs/protocol.md section 8)."""

import time

from bus import BusTest, TS_RE, enc, env, new_id, run_last, t, uname

LETTER_KEYS = {"id", "at", "code", "msg_id", "src", "dst", "action", "bytes", "replayable"}


class DeadLetters(BusTest):

    def refused_request(self, c, dst=None, **extra):
        """c sends a request nobody serves; returns (the message, its letter)."""
        m = c.send(env("request", c.name, dst or uname("nobody"), "lost", {"n": 1}, **extra))
        self.expect_error(c, "no_such_service", corr=m["msg_id"])
        letter = self.find_letter(c, m["msg_id"], "no_such_service")
        self.assertIsNotNone(letter, "no dead letter for a request answered no_such_service")
        return m, letter

    def test_B2_refused_message_kept_newest_first(self):
        c = self.peer(uname("b2"))
        m1, _ = self.refused_request(c)
        m2, _ = self.refused_request(c)
        body = self.dead_letters(c, 100)
        self.assertEqual(set(body), {"status", "count", "evicted", "dead_letters"}, body)
        self.assertIsInstance(body["count"], int)
        self.assertIsInstance(body["evicted"], int)
        self.assertGreaterEqual(body["count"], 2)
        ids = [d["id"] for d in body["dead_letters"]]
        self.assertEqual(ids, sorted(ids, reverse=True), "newest first")
        self.assertEqual(len(ids), len(set(ids)), "ids unique")
        pos = {d["msg_id"]: i for i, d in reversed(list(enumerate(body["dead_letters"])))}
        self.assertLess(pos[m2["msg_id"]], pos[m1["msg_id"]], "the newer letter first")
        d = body["dead_letters"][pos[m1["msg_id"]]]
        self.assertEqual(set(d), LETTER_KEYS, d)
        self.assertIsInstance(d["id"], int)
        self.assertRegex(d["at"], TS_RE)
        self.assertEqual((d["code"], d["msg_id"], d["src"], d["dst"], d["action"]),
                         ("no_such_service", m1["msg_id"], c.name, m1["dst"], "lost"))
        self.assertEqual(d["bytes"], len(enc(m1)))
        self.assertIs(d["replayable"], True)

    def test_B2_limit(self):
        c = self.peer(uname("b2"))
        self.refused_request(c)
        self.refused_request(c)
        one = self.dead_letters(c, 1)
        self.assertEqual(len(one["dead_letters"]), 1)
        self.assertEqual(self.dead_letters(c, 0)["dead_letters"], [])
        self.assertEqual(len(self.dead_letters(c, 2.9)["dead_letters"]), 2, "fractions cut")
        for payload in (None, {"limit": "1"}, {"limit": -1}, [1]):
            with self.subTest(payload=payload):
                r = self.call_broker(c, "dead_letters", payload=payload)
                n = len(r["payload"]["dead_letters"])
                self.assertEqual(n, min(100, r["payload"]["count"]), "default limit 100")
                self.assertGreaterEqual(n, 2)

    def test_B2_which_refusals_are_kept(self):
        c = self.peer(uname("b2"))
        holder = self.peer(uname("b2held"))
        self.register(holder)
        kept = {
            "spoofed_src": env("request", holder.name, "broker", "ping"),
            "unknown_action": env("request", c.name, "broker", "nope"),
            "unknown_request": env("response", c.name, uname("x"), "w", correlation_id=new_id()),
            "reserved_name": env("event", "broker", uname("x"), "w"),
            "bad_name": env("event", c.name, "bad name", "w"),
            "bad_envelope": env("event", c.name, "broker", "w"),
            "not_registered": env("unregister", uname("never"), "broker", "unregister"),
        }
        v2 = env("request", c.name, "broker", "ping", v=2)
        bad_type, dup_key = new_id(), new_id()
        not_kept = [
            ("unsupported_version", v2["msg_id"], enc(v2)),
            ("bad_envelope", bad_type,
             ('{"msg_id":"%s","type":"nope","src":"%s","dst":"broker"}' % (bad_type, c.name)).encode()),
            ("bad_envelope", dup_key,
             ('{"msg_id":"%s","type":"event","type":"event","src":"%s","dst":"broker"}'
              % (dup_key, c.name)).encode()),
        ]
        for code, m in kept.items():
            c.send(m)
            self.expect_error(c, code, corr=m["msg_id"])
        for code, mid, data in not_kept:
            c.send_bytes(data)
            self.expect_error(c, code, corr=mid)
        letters = {d["msg_id"]: d for d in self.dead_letters(c, 100)["dead_letters"]}
        for code, m in kept.items():
            with self.subTest(kept=code):
                self.assertIn(m["msg_id"], letters, "a %s refusal is a dead letter" % code)
                self.assertEqual(letters[m["msg_id"]]["code"], code)
                self.assertIs(letters[m["msg_id"]]["replayable"], True)
        for code, mid, _ in not_kept:
            self.assertNotIn(mid, letters, "no letter without a readable msg_id, v and type (%s)" % code)

    def test_B2_failed_requests_kept_without_bytes(self):
        svc, cli = self.service_and_client()
        m1, _ = self.send_request(cli, svc, action="slow", ttl_ms=100)
        self.expect_error(cli, "timeout", corr=m1["msg_id"])
        m2, _ = self.send_request(cli, svc, action="die")
        svc.close()
        self.expect_error(cli, "service_gone", corr=m2["msg_id"], timeout=2.0)
        for m, code in ((m1, "timeout"), (m2, "service_gone")):
            with self.subTest(code=code):
                d = self.find_letter(cli, m["msg_id"], code)
                self.assertIsNotNone(d, "no %s letter" % code)
                self.assertEqual((d["src"], d["action"], d["bytes"], d["replayable"]),
                                 (cli.name, m["action"], 0, False), d)
                body = self.replay(cli, d["id"])
                self.assertEqual(body.get("status"), "error", body)
                self.assertIsInstance(body.get("message"), str, body)
        self.expect_nothing(cli, 0.1, "nothing re-injected")

    def test_B2_answer_for_a_gone_requester_kept(self):
        svc = self.peer(uname("b2"))
        self.register(svc)
        cli = self.peer(uname("cli"))
        m, got = self.send_request(cli, svc)
        cli.close()
        time.sleep(t(0.3))           # let the broker see the disconnect (D3)
        a = self.answer(svc, got.msg)
        found = []
        self.assertTrue(self.wait_until(
            lambda: found.append(self.find_letter(svc, a["msg_id"])) or found[-1], 1.0),
            "the dropped answer is not a dead letter")
        d = found[-1]
        self.assertEqual((d["code"], d["src"], d["replayable"]), ("requester_gone", svc.name, True), d)

    def test_B2_replay_reinjects_as_the_original_connection(self):
        name = uname("b2svc")
        c = self.peer(uname("b2cli"))
        m, letter = self.refused_request(c, dst=name)
        svc = self.peer(name)
        self.register(svc)
        op = self.peer(uname("b2op"))          # another connection replays it
        self.assertEqual(self.replay(op, letter["id"]), {"status": "ok", "replayed": letter["id"]})
        got = self.expect(svc, what="the replayed request")
        self.assertEqual(got.raw, enc(m), "replayed as the very bytes")
        # every rule again: the same request again is a duplicate while in flight
        self.assertEqual(self.replay(op, letter["id"])["status"], "ok", "the letter stays")
        self.expect_error(c, "duplicate_msg_id", corr=m["msg_id"])
        self.answer(svc, got.msg)
        self.expect_response(c, m["msg_id"])     # the answer goes to the original sender
        self.expect_nothing_all([op, svc, c], 0.1, "nothing else")

    def test_B2_replay_that_fails_again_answers_the_sender(self):
        c = self.peer(uname("b2cli"))
        m, letter = self.refused_request(c)
        op = self.peer(uname("b2op"))
        self.assertEqual(self.replay(op, letter["id"])["status"], "ok")
        self.expect_error(c, "no_such_service", corr=m["msg_id"])
        self.expect_nothing(op, 0.1, "the replayer gets only the replay's answer")
        newer = self.find_letter(op, m["msg_id"], "no_such_service")
        self.assertGreater(newer["id"], letter["id"], "a new letter for the new refusal")

    def test_B2_replay_refused_cases(self):
        op = self.peer(uname("b2op"))
        for payload in ({"id": 0}, {"id": 10 ** 12}, {"id": "1"}, {}, None):
            with self.subTest(payload=payload):
                body = self.call_broker(op, "replay", payload=payload)["payload"]
                self.assertEqual(body.get("status"), "error", body)
                self.assertIsInstance(body.get("message"), str, body)
        # the sender is gone: nothing to speak for
        c = self.peer(uname("b2cli"))
        _, letter = self.refused_request(c)
        c.close()
        ok = self.wait_until(lambda: self.replay(op, letter["id"]).get("status") == "error", 2.0)
        self.assertTrue(ok, "replay for a sender that disconnected is not refused")

    def test_B2_replay_keeps_the_senders_shape(self):
        # F2: the original sender spoke REQ-style (["", json]); a replay is not
        # a message of its own and must not change the shape it gets.
        name = uname("b2svc")
        c = self.peer(uname("b2cli"), shape=3)
        m, letter = self.refused_request(c, dst=name)
        svc = self.peer(name)
        self.register(svc)
        op = self.peer(uname("b2op"))
        self.assertEqual(self.replay(op, letter["id"])["status"], "ok")
        got = self.expect(svc, what="the replayed request")
        self.answer(svc, got.msg)
        r = self.expect_response(c, m["msg_id"])
        self.assertEqual(r.frames[:-1], [b""], "the answer in the sender's 3-frame shape: %r" % r.frames)

    @run_last
    def test_B2_replay_inside_a_replay_is_refused(self):
        # A letter whose message is itself `replay {"id": <that letter>}`:
        # replaying it must not loop (nor crash the broker).
        holder = self.peer(uname("b2held"))
        self.register(holder)
        c = self.peer()
        letter = None
        for _ in range(5):               # predict the next id (others may add letters)
            newest = self.dead_letters(c, 1)["dead_letters"]
            want = newest[0]["id"] + 1 if newest else 1
            m = c.send(env("request", holder.name, "broker", "replay", {"id": want}))
            self.expect_error(c, "spoofed_src", corr=m["msg_id"])
            letter = self.find_letter(c, m["msg_id"], "spoofed_src", limit=20)
            if letter and letter["id"] == want:
                break
        self.assertEqual(letter["id"], want, "could not make a self-replaying letter")
        u = holder.send(env("unregister", holder.name, "broker", "unregister"))
        self.expect_response(holder, u["msg_id"])     # now c may use that src (S2)
        op = self.peer(uname("b2op"))
        self.assertEqual(self.replay(op, want), {"status": "ok", "replayed": want})
        r = self.expect_response(c, m["msg_id"], "replay")
        self.assertEqual(r["payload"].get("status"), "error", r.raw)
        self.expect_nothing(c, 0.1, "one answer, no loop")
        self.assert_alive()
