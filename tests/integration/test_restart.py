#!/usr/bin/python3
"""Restarts lose nothing (docs/protocol.md R1-R5, docs/operations.md).

The broker is restarted (SIGTERM, and kill -9) under traffic from the
seed's unchanged Python services: examples/python/seed_service.py (the
README snippet: registers once, never sends again), a service written the
seed's way that answers requests (registers once, then only answers), and
examples/python/echo_service.py (the smartshop library). After the
restart every one of them is routable again with no action of its own,
and every request the clients sent was answered or got an error: none
vanished. A restored peer that does not come back is dropped after
--restore-grace-ms; under CURVE a restored name stays bound to its key.
"""
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

import zmq  # noqa: E402

# A service written the way the seed's README writes one: its identity
# set, one register, then it only answers what it receives.
SEED_ECHO = '''import os, zmq
from core.message import build_message, loads, dumps
ctx = zmq.Context.instance()
s = ctx.socket(zmq.DEALER)
s.identity = b"seed-echo"
s.connect(os.environ["SMARTSHOP_ENDPOINT"])
s.send(dumps(build_message("register", "seed-echo", "broker", "register")))
while True:
    msg = loads(s.recv_multipart()[-1])
    print("Got:", msg.get("type"), msg.get("msg_id"), flush=True)
    if msg.get("type") == "request":
        reply = build_message("response", "seed-echo", msg["src"], msg["action"], msg.get("payload"))
        reply["correlation_id"] = msg["msg_id"]
        s.send(dumps(reply))
'''

SLOW = bp.SLOW


def state_written(peer, src=None):
    """True once the broker's state file holds every change made so far."""
    state = peer.call_broker("stats", src=src)["payload"]["state"]
    return state["queued"] == 0 and state["written"] > 0


class Proc:
    """A Python service process; its stdout lines collected by a thread."""

    def __init__(self, argv, endpoint):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=bp.python_env(endpoint), cwd=bp.EXAMPLES)
        self.lines = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def saw(self, needle):
        return any(needle in line for line in self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Traffic(threading.Thread):
    """A client sending requests one after another, each waited for: an
    answer, an error, or nothing within `patience` (vanished). It acts on
    the codes as docs/protocol.md says: after shutting_down it waits the
    answer's retry_after_ms (D5), after busy a little (D4)."""

    def __init__(self, endpoint, dst, src, ttl_ms=2000, patience=8.0):
        super().__init__(daemon=True)
        self.endpoint, self.dst, self.src = endpoint, dst, src
        self.ttl_ms, self.patience = ttl_ms, patience * SLOW
        self.outcomes = []          # (time sent, msg_id, "response" | error code | "vanished")
        self.halt = threading.Event()

    def run(self):
        sock = bp.context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            while not self.halt.is_set():
                m = bp.msg("request", self.src, self.dst, "echo", payload={"n": len(self.outcomes)},
                           ttl_ms=self.ttl_ms)
                sent = time.monotonic()
                sock.send(bp.dumps(m))
                outcome = "vanished"
                deadline = sent + self.patience
                while time.monotonic() < deadline:
                    if not sock.poll(50):
                        continue
                    body = bp.loads(sock.recv_multipart()[-1])
                    if body.get("correlation_id") != m["msg_id"]:
                        continue
                    outcome = body["type"] if body["type"] == "response" else bp.error_code(body)
                    break
                self.outcomes.append((sent, m["msg_id"], outcome))
                if outcome == "shutting_down":
                    time.sleep(body["payload"]["retry_after_ms"] / 1000.0)
                elif outcome != "response":
                    time.sleep(0.1)
        finally:
            sock.close()

    def answered_after(self, t):
        return [o for o in self.outcomes if o[0] > t and o[2] == "response"]


class RestartTest(unittest.TestCase):

    def setUp(self):
        self.state = tempfile.mkdtemp(prefix="smartshop-restart-")
        self.port = bp.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.procs, self.brokers, self.peers = [], [], []

    def tearDown(self):
        for p in self.procs:
            p.stop()
        for p in self.peers:
            p.close()
        for b in self.brokers:
            stopped_by_test = b.returncode is not None or b.proc.poll() is not None
            code = b.stop()
            log = b.log_text()
            b.cleanup()
            # a clean stop, sanitizers included (a kill -9 by the test aside)
            if not stopped_by_test:
                self.assertEqual(code, 0, log)
            self.assertNotRegex(log, r"Sanitizer|runtime error")
        shutil.rmtree(self.state, ignore_errors=True)

    def start_broker(self, *args):
        b = bp.Broker(port=self.port, state_dir=self.state, args=args)
        self.brokers.append(b)
        return b

    def peer(self, b, **kw):
        p = b.peer(**kw)
        self.peers.append(p)
        return p

    def service(self, argv):
        p = Proc(argv, self.endpoint)
        self.procs.append(p)
        return p

    def wait_listed(self, client, names, timeout=5.0):
        got = bp.wait_until(lambda: names <= set(bp.services(client)), timeout * SLOW)
        self.assertTrue(got, "not all of %s listed: %s" % (names, bp.services(client)))

    def start_seed_services(self, b):
        seed = self.service([sys.executable, os.path.join(bp.EXAMPLES, "seed_service.py")])
        echo = self.service([sys.executable, "-c", SEED_ECHO])
        lib = self.service([sys.executable, os.path.join(bp.EXAMPLES, "echo_service.py"),
                            "--endpoint", self.endpoint])
        watcher = self.peer(b, name="watcher")
        self.wait_listed(watcher, {"your-service-name", "seed-echo", "echo-service"})
        self.assertTrue(bp.wait_until(lambda: state_written(watcher), 3 * SLOW))
        watcher.close()
        return seed, echo, lib

    def assert_none_vanished(self, clients, marks=None):
        for c in clients:
            vanished = [o for o in c.outcomes if o[2] == "vanished"]
            self.assertEqual(vanished, [], "requests to %s got neither an answer nor an error "
                             "(times: %s; outcomes around: %s)"
                             % (c.dst, marks, [o for o in c.outcomes if vanished and
                                               abs(o[0] - vanished[0][0]) < 1.5]))
            self.assertTrue(c.outcomes, "client for %s sent nothing" % c.dst)

    def test_restart_under_traffic_loses_no_service_and_no_request(self):
        b = self.start_broker("--shutdown-grace-ms", "1000")
        seed, echo, lib = self.start_seed_services(b)
        clients = [Traffic(self.endpoint, "seed-echo", "client-a"),
                   Traffic(self.endpoint, "echo-service", "client-b"),
                   Traffic(self.endpoint, "seed-echo", "client-c")]
        for c in clients:
            c.start()
        self.assertTrue(bp.wait_until(lambda: all(c.answered_after(0) for c in clients),
                                      5 * SLOW), "no traffic answered before the restart")
        stopped = time.monotonic()
        b.send_signal(signal.SIGTERM)
        self.assertEqual(b.wait(10 * SLOW), 0, b.log_text())
        restarted = time.monotonic()
        b2 = self.start_broker("--shutdown-grace-ms", "1000")
        b2_ready = time.monotonic()
        self.assertTrue(b2.wait_for_log(r"restored \d+ registration", 5 * SLOW), b2.log_text())
        # every service routable again, none of them doing anything for it
        ok = bp.wait_until(lambda: all(c.answered_after(restarted + 0.2) for c in clients),
                           10 * SLOW)
        for c in clients:
            c.halt.set()
        for c in clients:
            c.join(15 * SLOW)
        self.assertTrue(ok, "not every service answered after the restart: %s\n%s"
                        % ([(c.dst, c.outcomes[-5:]) for c in clients], b2.log_text()))
        self.assert_none_vanished(clients, {"sigterm": stopped, "exited": restarted,
                                            "ready": time.monotonic() and b2_ready})
        # the snippet never sends: a request still reaches it
        probe = self.peer(b2, name="prober")
        r = probe.request("your-service-name", "hello", src="prober", ttl_ms=500)
        self.assertTrue(bp.wait_until(lambda: seed.saw(r["msg_id"]), 3 * SLOW),
                        "the seed snippet did not get a request after the restart")
        self.assertEqual(bp.error_code(probe.recv_answer(r["msg_id"], 3 * SLOW)[1]), "timeout")
        for p in (seed, echo, lib):
            self.assertIsNone(p.proc.poll(), "a seed service died: %s" % p.lines[-5:])

    def test_kill_9_keeps_the_registry(self):
        b = self.start_broker()
        seed, echo, lib = self.start_seed_services(b)
        b.proc.kill()
        b.proc.wait()
        b2 = self.start_broker()
        client = self.peer(b2, name="after-kill")
        self.wait_listed(client, {"your-service-name", "seed-echo", "echo-service"})

        def answered():
            r = client.request("seed-echo", "echo", payload={"k": 9}, src="after-kill", ttl_ms=1000)
            body = client.recv_answer(r["msg_id"], 3 * SLOW)[1]
            return body.get("type") == "response" and body.get("payload") == {"k": 9}
        self.assertTrue(bp.wait_until(answered, 5 * SLOW, 0.2), b2.log_text())

    def test_restored_peer_not_back_is_dropped_after_grace_silent_one_is_kept(self):
        b = self.start_broker()
        seed = self.service([sys.executable, os.path.join(bp.EXAMPLES, "seed_service.py")])
        ghost = self.peer(b, identity=b"ghost-1")
        ghost.register("ghost")
        watcher = self.peer(b, name="w")
        self.wait_listed(watcher, {"ghost", "your-service-name"})
        self.assertTrue(bp.wait_until(lambda: state_written(watcher), 3 * SLOW))
        b.proc.kill()
        b.proc.wait()
        ghost.close()                       # gone while the broker was down
        b2 = self.start_broker("--restore-grace-ms", str(int(1500 * SLOW)))
        client = self.peer(b2, name="c")
        self.assertIn("ghost", bp.services(client))
        r = client.request("ghost", "do", src="c")
        body = client.recv_answer(r["msg_id"])[1]
        self.assertEqual(bp.error_code(body), "busy", body)
        self.assertIn("restored", body["payload"]["message"])
        self.assertTrue(bp.wait_until(lambda: "ghost" not in bp.services(client), 5 * SLOW),
                        b2.log_text())
        self.assertIn("your-service-name", bp.services(client))
        # the silent one got the one notice that told the broker it is back
        self.assertTrue(bp.wait_until(lambda: seed.saw("'action': 'restored'"), 2 * SLOW),
                        seed.lines)
        r = client.request("ghost", "do", src="c")
        self.assertEqual(bp.error_code(client.recv_answer(r["msg_id"])[1]), "no_such_service")
        self.assertIsNone(seed.proc.poll())


class CurveRestartTest(unittest.TestCase):
    """Under CURVE a restored name stays bound to the key that registered it."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smartshop-restart-curve-")
        self.state = os.path.join(self.dir, "state")
        self.port = bp.free_port()
        self.broker_pub, _ = bp.keygen(os.path.join(self.dir, "broker"))
        self.owner = bp.keygen(os.path.join(self.dir, "owner"))
        self.other = bp.keygen(os.path.join(self.dir, "other"))
        with open(os.path.join(self.dir, "allow"), "w") as f:
            f.write("%s stock\n%s *\n" % (self.owner[0], self.other[0]))
        self.brokers, self.peers = [], []

    def tearDown(self):
        for p in self.peers:
            p.close()
        for b in self.brokers:
            stopped_by_test = b.returncode is not None or b.proc.poll() is not None
            code = b.stop()
            log = b.log_text()
            b.cleanup()
            # a clean stop, sanitizers included (a kill -9 by the test aside)
            if not stopped_by_test:
                self.assertEqual(code, 0, log)
            self.assertNotRegex(log, r"Sanitizer|runtime error")
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_broker(self):
        b = bp.Broker(port=self.port, state_dir=self.state, args=[
            "--curve-secret-key", os.path.join(self.dir, "broker.key"),
            "--curve-allow", os.path.join(self.dir, "allow"),
            "--restore-grace-ms", str(int(3000 * SLOW))])
        self.brokers.append(b)
        return b

    def peer(self, b, keys, identity):
        public, secret = keys
        p = b.peer(identity=identity, options={
            zmq.CURVE_SERVERKEY: self.broker_pub.encode(), zmq.CURVE_PUBLICKEY: public.encode(),
            zmq.CURVE_SECRETKEY: secret.encode()})
        self.peers.append(p)
        return p

    def test_restored_name_is_adopted_only_with_its_key(self):
        b = self.start_broker()
        owner = self.peer(b, self.owner, b"stock-1")
        owner.register("stock")
        self.assertTrue(bp.wait_until(lambda: state_written(owner, "stock"), 3 * SLOW))
        b.proc.kill()
        b.proc.wait()
        owner.close()                       # away while the broker was down
        b2 = self.start_broker()
        # another key on the same identity: refused, and the name stays bound
        impostor = self.peer(b2, self.other, b"stock-1")
        m = impostor.send(bp.msg("request", "stock", "broker", "ping"))
        body = impostor.recv(3 * SLOW)[1]
        self.assertEqual(bp.error_code(body), "denied", body)
        impostor.close()
        client = self.peer(b2, self.other, b"client-1")
        reg = client.send(bp.msg("register", "stock", "broker", "register"))
        self.assertEqual(bp.error_code(client.recv_answer(reg["msg_id"])[1]), "name_taken")
        r = client.request("stock", "count", src="client-x")
        self.assertEqual(bp.error_code(client.recv_answer(r["msg_id"])[1]), "busy")
        # the owner's key on its identity: adopted, routable
        owner = self.peer(b2, self.owner, b"stock-1")
        pong = owner.call_broker("ping", src="stock")
        self.assertEqual(pong["payload"]["registered"], ["stock"], pong)
        r = client.request("stock", "count", src="client-x")
        got = owner.recv(3 * SLOW)[1]
        self.assertEqual(got.get("msg_id"), r["msg_id"], got)
        del m


if __name__ == "__main__":
    unittest.main()
