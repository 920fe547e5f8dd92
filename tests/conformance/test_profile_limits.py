"""L5: limits on connections, names per connection and service names
(docs/protocol.md section 10), against a broker started with small limits:

    run.py --profile limits --max-peers 8 --max-names-per-peer 3 --max-services 8

The tests read `stats` `peers` (connections known) and `list_services` to
learn how much of each limit others use, and fill the rest.
"""

import time

from bus import BusTest, CONFIG, env, profile, t, uname


class Limits(BusTest):

    def settled(self, obs):
        """(connections known, names held) once neither changed for a while:
        connections of earlier tests may still be going away."""
        last, same, deadline = None, 0, time.monotonic() + t(3.0)
        while True:
            st = self.stats(obs)
            now = (st["peers"], len(self.list_services(obs)))
            same = same + 1 if now == last else 0
            last = now
            if same >= 3 or time.monotonic() > deadline:
                return now
            time.sleep(0.05)

    def admitted_peer(self, name=None):
        """A connection the broker records: its ping is answered (retried while
        a connection of an earlier test has not gone away yet)."""
        p = self.peer(name or uname("l5"))
        deadline = time.monotonic() + t(3.0)
        while True:
            m = p.send(env("request", p.src(), "broker", "ping"))
            r = self.expect(p, what="an answer to ping")
            if r.get("type") == "response" and r.get("correlation_id") == m["msg_id"]:
                return p
            self.assertEqual(r["payload"].get("code"), "limit_exceeded", r.raw)
            if time.monotonic() > deadline:
                self.fail("the broker keeps refusing a connection: %s" % r.raw)
            time.sleep(0.05)

    def register_refused(self, p, name):
        m = p.send(env("register", name, "broker", "register", {}))
        r = self.expect_error(p, "limit_exceeded", corr=m["msg_id"])
        self.assertEqual(r["dst"], name, r.raw)
        self.assertEqual(r["action"], "register", r.raw)
        return r

    @profile("limits")
    def test_L5_max_peers(self):
        obs = self.admitted_peer(uname("l5obs"))
        known, _ = self.settled(obs)
        room = CONFIG.max_peers - known
        self.assertGreaterEqual(room, 1, "the broker knows %d connections already" % known)
        admitted = []
        for _ in range(room):
            p = self.peer(uname("l5p"))
            self.assertEqual(self.ping(p), set(), "connection %d of %d" % (known + len(admitted) + 1,
                                                                           CONFIG.max_peers))
            admitted.append(p)
        # one more: every message it sends gets limit_exceeded, unread
        extra = self.peer(uname("l5x"), shape=3)
        name = extra.name
        for m in (env("request", name, "broker", "ping"),
                  env("register", name, "broker", "register", {}),
                  env("request", name, "broker", "ping")):
            with self.subTest(type=m["type"]):
                extra.send(m)
                r = self.expect_error(extra, "limit_exceeded", corr=None)
                self.assertIsNone(r["dst"], r.raw)
                self.assertIsNone(r["action"], r.raw)
                self.assertEqual(r.frames[:-1], [b""], "in the shape the peer used (F2)")
        self.assertEqual(self.instances(obs, name), 0, "nothing registered")
        # a known one goes away: the next message of the new one is read
        admitted[0].close()
        deadline = time.monotonic() + t(3.0)
        while True:
            m = extra.send(env("request", name, "broker", "ping"))
            r = self.expect(extra, what="an answer to ping")
            if r.get("type") == "response":
                self.assertEqual(r["correlation_id"], m["msg_id"], r.raw)
                self.assertEqual(r["payload"]["registered"], [],
                                 "the refused register was not read")
                break
            self.assertEqual(r["payload"].get("code"), "limit_exceeded", r.raw)
            self.assertLess(time.monotonic(), deadline,
                            "still refused after a known connection went away")
            time.sleep(0.05)
        self.register(extra)

    @profile("limits")
    def test_L5_max_names_per_peer(self):
        k = CONFIG.max_names
        obs = self.admitted_peer(uname("l5obs"))
        _, held = self.settled(obs)
        self.assertLessEqual(held + k + 1, CONFIG.max_services,
                             "the broker holds %d names already: no room to test" % held)
        p = self.peer(uname("l5n"))
        names = [uname("l5n") for _ in range(k)]
        for n in names:
            self.register(p, n)
        extra = uname("l5n")
        self.register_refused(p, extra)
        self.assertEqual(self.ping(p), set(names), "the refused name is not registered")
        self.assertEqual(self.instances(obs, extra), 0)
        self.register(p, names[0])            # a name it holds: never refused (T1)
        # room again once a name is dropped
        self.unregister(p, names[-1])
        self.register(p, extra)
        self.assertEqual(self.ping(p), set(names[:-1]) | {extra})

    @profile("limits")
    def test_L5_max_services(self):
        k, s = CONFIG.max_names, CONFIG.max_services
        obs = self.admitted_peer(uname("l5obs"))
        _, held = self.settled(obs)
        self.assertLess(held, s, "the broker holds %d names already" % held)
        holders, names = [], []
        while held + len(names) < s:
            p = self.peer(uname("l5s"))
            holders.append(p)
            for _ in range(min(k, s - held - len(names))):
                n = uname("l5s")
                self.register(p, n)
                names.append((n, p))
        q = self.peer(uname("l5q"))
        extra = uname("l5s")
        self.register_refused(q, extra)
        self.assertEqual(self.ping(q), set(), "nothing registered")
        self.assertEqual(self.instances(obs, extra), 0)
        # another instance of a held name, or a name held again: never refused
        self.register(q, names[0][0])
        self.assertEqual(self.instances(obs, names[0][0]), 2)
        self.register(names[0][1], names[0][0])
        # room again once a name nobody else holds is dropped
        n, holder = names[-1]
        self.unregister(holder, n)
        self.register(q, extra)
        self.assertEqual(self.ping(q), {names[0][0], extra})
