#!/usr/bin/python3
"""A Lua service and a remote peer registered under one name are two
instances of one service: requests and named events alternate between them
(T1, T3, T5; issue 4). Fixture: tests/lua_services/shared.lua
("shared-svc": answers {by = "lua", n, payload})."""
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

FIXTURES = bp.LUA_FIXTURES
NAME = "shared-svc"


class LuaAndRemoteInstancesTest(unittest.TestCase):
    def setUp(self):
        # a fresh broker each test: the rotation starts from a known state
        self.dir = bp.services_dir({"shared.lua": os.path.join(FIXTURES, "shared.lua")})
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.b = bp.Broker(args=("--policy", "", "--services", self.dir))
        self.addCleanup(self.stop_broker)

    def stop_broker(self):
        alive = self.b.alive()
        code = self.b.stop()
        log = self.b.log_text()
        self.b.cleanup()
        self.assertTrue(alive, "broker died; log:\n" + log)
        self.assertEqual(code, 0, log)

    def mk(self, **kw):
        p = self.b.peer(**kw)
        self.addCleanup(p.close)
        return p

    def remote_instance(self):
        p = self.mk(identity="remote-" + bp.new_id(), name=NAME)
        p.register(NAME)
        return p

    def run_requests(self, client, remote, n):
        """Sends n requests; the remote answers what it gets with by=remote.
        Returns the list of 'lua'/'remote' in the order the requests were sent."""
        reqs = [client.request(NAME, "work", payload=i, src="rr-client") for i in range(n)]
        answers = {}
        deadline = time.monotonic() + 3.0
        while len(answers) < n and time.monotonic() < deadline:
            for sock_peer in (remote, client):
                frames = sock_peer.recv_raw(0.02)
                if frames is None:
                    continue
                body = bp.loads(frames[-1])
                if sock_peer is remote:
                    self.assertEqual(body["type"], "request", bp.dump(body))
                    remote.answer(body, payload={"by": "remote", "payload": body["payload"]})
                else:
                    answers[body["correlation_id"]] = body
        self.assertEqual(len(answers), n, answers)
        out = []
        for i, r in enumerate(reqs):
            body = answers[r["msg_id"]]
            self.assertEqual(body["type"], "response", bp.dump(body))
            self.assertEqual(body["payload"]["payload"], i)
            self.assertEqual(body["src"], NAME)
            out.append(body["payload"]["by"])
        return out

    def test_list_services_counts_both_instances(self):
        client = self.mk()
        self.assertEqual(bp.services(client), {NAME: 1})
        self.remote_instance()
        self.assertEqual(bp.services(client), {NAME: 2})

    def test_requests_alternate_between_the_lua_and_the_remote_instance(self):
        remote = self.remote_instance()
        client = self.mk()
        order = self.run_requests(client, remote, 10)
        self.assertEqual(order.count("lua"), 5, order)
        self.assertEqual(order.count("remote"), 5, order)
        for a, b in zip(order, order[1:]):
            self.assertNotEqual(a, b, "not alternating: %r" % order)

    def test_two_remotes_and_the_lua_instance_take_turns(self):
        r1, r2 = self.remote_instance(), self.remote_instance()
        client = self.mk()
        reqs = [client.request(NAME, "work", payload=i, src="rr3-client") for i in range(9)]
        got = {"r1": 0, "r2": 0, "lua": 0}
        deadline = time.monotonic() + 3.0
        while sum(got.values()) < 9 and time.monotonic() < deadline:
            for key, p in (("r1", r1), ("r2", r2), ("lua", client)):
                frames = p.recv_raw(0.02)
                if frames is not None:
                    body = bp.loads(frames[-1])
                    if key == "lua":
                        self.assertEqual(body["payload"]["by"], "lua", bp.dump(body))
                    got[key] += 1
        self.assertEqual(got, {"r1": 3, "r2": 3, "lua": 3})
        self.assertEqual(len(reqs), 9)

    def test_named_events_alternate_too(self):
        remote = self.remote_instance()
        sender = self.mk()
        for i in range(6):
            sender.send(bp.msg("event", "rr-ev-sender", NAME, "tick", payload=i))
        got = []
        while True:
            frames = remote.recv_raw(0.3)
            if frames is None:
                break
            got.append(bp.loads(frames[-1])["payload"])
        self.assertEqual(len(got), 3, got)
        sender.expect_nothing(0.1)

    def test_when_the_remote_leaves_the_lua_instance_takes_everything(self):
        remote = self.remote_instance()
        remote.close()
        client = self.mk()
        self.assertTrue(bp.wait_until(lambda: bp.services(client).get(NAME) == 1, 3.0))
        for i in range(4):
            m = client.request(NAME, "work", payload=i, src="rr-alone")
            _, body = client.recv_answer(m["msg_id"])
            self.assertEqual(body["payload"]["by"], "lua", bp.dump(body))

    def test_when_the_lua_file_goes_the_remote_takes_everything(self):
        remote = self.remote_instance()
        client = self.mk()
        os.unlink(os.path.join(self.dir, "shared.lua"))
        self.assertTrue(bp.wait_until(lambda: bp.services(client).get(NAME) == 1, 1.0))
        order = self.run_requests(client, remote, 4)
        self.assertEqual(order, ["remote"] * 4)

    def test_a_lua_instance_added_live_joins_the_rotation(self):
        os.unlink(os.path.join(self.dir, "shared.lua"))
        client = self.mk()
        self.assertTrue(bp.wait_until(lambda: NAME not in bp.services(client), 1.0))
        remote = self.remote_instance()
        shutil.copy(os.path.join(FIXTURES, "shared.lua"), os.path.join(self.dir, "again.lua"))
        self.assertTrue(bp.wait_until(lambda: bp.services(client).get(NAME) == 2, 1.0))
        order = self.run_requests(client, remote, 6)
        self.assertEqual(order.count("lua"), 3, order)


if __name__ == "__main__":
    bp.main()
