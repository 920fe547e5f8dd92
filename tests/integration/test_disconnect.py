#!/usr/bin/python3
"""A peer that goes away loses its registrations within ~1-2 s (L2), however
it goes: socket closed, process killed. Its identity can come back."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

GONE_WITHIN = 2.0

# A separate process that registers a name, says so, then waits to be killed.
CHILD = r"""
import sys, zmq
sys.path.insert(0, %(examples)r)
from core.message import build_message, dumps, loads
s = zmq.Context.instance().socket(zmq.DEALER)
s.identity = %(name)r.encode()
s.connect(%(endpoint)r)
s.send(dumps(build_message("register", %(name)r, "broker", "register")))
print(loads(s.recv_multipart()[-1])["type"], flush=True)
while True:
    s.recv_multipart()
"""


class DisconnectTest(bp.BrokerTestCase):
    def assertGone(self, name, watcher=None):
        watcher = watcher or self.peer()
        gone = bp.wait_until(lambda: name not in bp.services(watcher), timeout=GONE_WITHIN)
        self.assertTrue(gone, "%s still listed %.1f s after its peer left: %r"
                        % (name, GONE_WITHIN, bp.services(watcher)))

    def test_closed_peer_disappears_from_list_services(self):
        p = self.peer(identity=b"leaver-a", register="leaver-a")
        watcher = self.peer()
        self.assertIn("leaver-a", bp.services(watcher))
        p.close()
        self.assertGone("leaver-a", watcher)

    def test_killed_process_disappears_from_list_services(self):
        code = CHILD % {"examples": bp.EXAMPLES, "name": "killed-b", "endpoint": self.broker.endpoint}
        child = subprocess.Popen([bp.PYTHON, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            line = child.stdout.readline().decode().strip()
            self.assertEqual(line, "response", child.stderr.read1().decode() if line == "" else line)
            watcher = self.peer()
            self.assertIn("killed-b", bp.services(watcher))
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            self.assertGone("killed-b", watcher)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
            child.stderr.close()

    def test_all_names_of_a_closed_peer_disappear(self):
        p = self.peer(register="many-c1")
        p.register("many-c2")
        p.register("many-c3")
        p.close()
        watcher = self.peer()
        for n in ("many-c1", "many-c2", "many-c3"):
            self.assertGone(n, watcher)

    def test_one_instance_leaving_leaves_the_others(self):
        a = self.peer(identity=b"inst-d0", register="pair-d")
        b = self.peer(identity=b"inst-d1", register="pair-d")
        watcher = self.peer()
        self.assertEqual(bp.services(watcher).get("pair-d"), 2)
        a.close()
        ok = bp.wait_until(lambda: bp.services(watcher).get("pair-d") == 1, timeout=GONE_WITHIN)
        self.assertTrue(ok, bp.services(watcher))
        req = watcher.request("pair-d", "do", src="watcher-d")
        _, got = b.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])

    def test_requests_to_a_departed_service_get_no_such_service(self):
        p = self.peer(register="departed-e")
        p.close()
        self.assertGone("departed-e")
        client = self.peer()
        m = client.request("departed-e", "do", src="client-e")
        self.expectError(client, "no_such_service", correlation_id=m["msg_id"])

    def test_same_identity_can_come_back_and_register_again(self):
        p = self.peer(identity=b"phoenix-f", register="phoenix-f")
        p.close()
        self.assertGone("phoenix-f")
        again = None
        # The broker may need a moment to release the identity.
        for _ in range(20):
            again = self.peer(identity=b"phoenix-f")
            again.send(bp.msg("register", "phoenix-f", "broker", "register"))
            if again.recv_raw(0.2) is not None:
                break
            again.close()
        body = again.call_broker("ping", src="phoenix-f")
        self.assertEqual(body["payload"]["registered"], ["phoenix-f"])

    def test_peer_count_in_stats_drops(self):
        watcher = self.peer()

        def peers():
            return watcher.call_broker("stats", src="stats-f")["payload"]["peers"]
        # Peers closed by earlier tests may still be leaving: wait for a steady count.
        base, steady, deadline = peers(), 0, time.monotonic() + 3
        while steady < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            now = peers()
            steady = steady + 1 if now == base else 0
            base = now
        extra = [self.peer(register="counted-%d" % i) for i in range(3)]
        self.assertEqual(peers(), base + 3)
        for p in extra:
            p.close()
        ok = bp.wait_until(lambda: peers() == base, timeout=GONE_WITHIN)
        self.assertTrue(ok, "peers %s, expected %s" % (peers(), base))


if __name__ == "__main__":
    bp.main()
