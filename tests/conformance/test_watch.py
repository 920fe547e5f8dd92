"""B3: watch and unwatch (docs/protocol.md section 8)."""

import time

from bus import CONFIG, SENT_IDS, BusTest, env, uname, t


class Watch(BusTest):

    def own(self, p, timeout=0.3):
        """Everything p receives within timeout that this process sent or
        the broker made for it (copies of other users' events are skipped)."""
        got, deadline = [], time.monotonic() + t(timeout)
        while True:
            r = p.recv(max(0.0, deadline - time.monotonic()) / CONFIG.scale)   # recv scales
            if r is None:
                return got
            if r.get("type") == "event" and r.get("msg_id") not in SENT_IDS:
                continue
            got.append(r)

    def watcher(self, name=None, shape=2):
        w = self.peer(name or uname("b3w"), shape)
        self.assertEqual(self.call_broker(w, "watch")["payload"], {"status": "ok"})
        return w

    def test_B3_copies_of_events_and_broadcasts_as_sent(self):
        w = self.watcher(shape=3)               # never registers
        svc, s = self.service_and_client()
        raw = ('{ "msg_id" : "%s", "type":"event", "src":"%s", "dst":"%s", "action":"e", '
               '"payload":{"b":[1, 2.50]}, "x-extra":true }')
        for dst in (svc.name, "broadcast"):
            with self.subTest(dst=dst):
                m = env("event", s.name, dst, "e")
                data = (raw % (m["msg_id"], s.name, dst)).encode()
                SENT_IDS.add(m["msg_id"])
                s.send_bytes(data)
                got = self.own(w)
                self.assertEqual(len(got), 1, "one copy: %r" % got)
                self.assertEqual(got[0].frames, [b"", data], "the very bytes, in the watcher's shape")
                r = self.expect(svc, what="the event itself")
                self.assertEqual(r.raw, data)
        self.expect_nothing(s, 0.1, "no copy for the sender")

    def test_B3_what_is_copied(self):
        w = self.watcher()
        svc, s = self.service_and_client()
        # an event then refused at routing is still copied
        m1 = s.send(env("event", s.name, uname("nobody"), "e"))
        self.expect_error(s, "no_such_service", corr=m1["msg_id"])
        m2 = s.send(env("event", s.name, "broker", "e"))
        self.expect_error(s, "bad_envelope", corr=m2["msg_id"])
        self.assertEqual([r["msg_id"] for r in self.own(w)], [m1["msg_id"], m2["msg_id"]],
                         "copied before routing")
        # refused before routing (S1-S2): not copied
        m = s.send(env("event", svc.name, "broadcast", "e"))
        self.expect_error(s, "spoofed_src", corr=m["msg_id"])
        # requests and answers: not copied
        req, got = self.send_request(s, svc)
        self.answer(svc, got.msg)
        self.expect_response(s, req["msg_id"])
        # the watcher's own events: not copied back to it
        w.send(env("event", w.name, svc.name, "mine"))
        self.expect(svc, what="the watcher's event")
        self.assertEqual(self.own(w), [], "nothing else copied")

    def test_B3_watcher_that_is_a_recipient_gets_two_copies(self):
        w = self.watcher()
        self.register(w)
        s = self.peer(uname("b3s"))
        for dst in ("broadcast", w.name):
            with self.subTest(dst=dst):
                m = s.send(env("event", s.name, dst, "e"))
                got = self.own(w)
                self.assertEqual([r["msg_id"] for r in got], [m["msg_id"]] * 2, "recipient + watcher")
                self.assertEqual(got[0].raw, got[1].raw)

    def test_B3_watch_idempotent_unwatch_stops(self):
        w = self.watcher()
        self.call_broker(w, "watch")
        svc, s = self.service_and_client()
        m = s.send(env("event", s.name, svc.name, "e"))
        self.assertEqual([r["msg_id"] for r in self.own(w)], [m["msg_id"]], "one copy however often watched")
        self.assertEqual(self.call_broker(w, "unwatch")["payload"], {"status": "ok"})
        s.send(env("event", s.name, svc.name, "e"))
        s.send(env("event", s.name, "broadcast", "e"))
        self.assertEqual(self.own(w), [], "no copies after unwatch")
        self.expect(svc, what="event 1")
        self.expect(svc, what="event 2")
        self.expect(svc, what="the broadcast")

