#!/usr/bin/python3
"""The seed README's minimal DEALER service keeps working unchanged.

Runs it two ways, each as a separate /usr/bin/python3 process:
  - examples/python/seed_service.py (endpoint from SMARTSHOP_ENDPOINT);
  - the snippet's exact text, with only "tcp://127.0.0.1:5555" replaced by
    the test broker's endpoint.
A client request must show up in its stdout, and it must stay registered
(list_services) past the transport heartbeat timeout (L3), though it never
sends anything after its register.
"""
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

SEED_SNIPPET = '''import zmq
from core.message import build_message, loads, dumps

context = zmq.Context.instance()
socket = context.socket(zmq.DEALER)
socket.identity = b"your-service-name"
socket.connect("tcp://127.0.0.1:5555")

reg = build_message("register", "your-service-name", "broker", "register")
socket.send(dumps(reg))

while True:
    frames = socket.recv_multipart()
    msg = loads(frames[-1])
    print("Got:", msg)
'''

NAME = "your-service-name"
HEARTBEAT_TIMEOUT = 3.0  # L3: ZMQ_HEARTBEAT_TIMEOUT set by the broker


class SeedProcess:
    """A Python service process whose stdout lines are collected by a thread."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, cwd=bp.EXAMPLES)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_for(self, needle, timeout=3.0):
        """The first stdout line (new or already seen) containing `needle`."""
        for line in self.seen:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError("%r not printed within %.1f s; output so far:\n%s"
                             % (needle, timeout, "\n".join(self.seen)))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class SeedSnippetTest(bp.BrokerTestCase):
    def run_and_check(self, seed):
        try:
            line = seed.wait_for("Got:")
            self.assertIn("'response'", line, "first thing printed should be the register answer")
            self.assertIn("'status': 'ok'", line)
            client = self.peer()
            watcher = self.peer()
            self.assertEqual(bp.services(watcher).get(NAME), 1)

            req = client.request(NAME, "get_info", src="seed-client", payload={"key": "value"})
            line = seed.wait_for(req["msg_id"])
            self.assertTrue(line.startswith("Got:"), line)
            self.assertIn("'request'", line)
            self.assertIn("'get_info'", line)

            # Silent past the heartbeat timeout: still registered, still reachable.
            time.sleep(HEARTBEAT_TIMEOUT + 0.7)
            self.assertEqual(seed.proc.poll(), None, "the snippet process exited")
            self.assertEqual(bp.services(watcher).get(NAME), 1,
                             "the passive seed service lost its registration")
            req2 = client.request(NAME, "get_info", src="seed-client", payload=2)
            seed.wait_for(req2["msg_id"])
            client.expect_nothing(0.1)  # no service_gone or other error
        finally:
            seed.stop()
        watcher = self.peer()
        gone = bp.wait_until(lambda: NAME not in bp.services(watcher), timeout=2.0)
        self.assertTrue(gone, "name still listed after the snippet process ended")

    def test_examples_seed_service_py_works(self):
        seed = SeedProcess([bp.PYTHON, os.path.join(bp.EXAMPLES, "seed_service.py")],
                           bp.python_env(self.broker.endpoint))
        self.run_and_check(seed)

    def test_the_verbatim_readme_snippet_works(self):
        text = SEED_SNIPPET.replace("tcp://127.0.0.1:5555", self.broker.endpoint)
        fd, path = tempfile.mkstemp(prefix="seed-snippet-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        env = bp.python_env(self.broker.endpoint)
        env["PYTHONPATH"] = bp.EXAMPLES  # where the seed's core/ package lives
        try:
            self.run_and_check(SeedProcess([bp.PYTHON, path], env))
        finally:
            os.unlink(path)

    def test_examples_seed_service_differs_from_the_readme_only_in_the_endpoint(self):
        with open(os.path.join(bp.EXAMPLES, "seed_service.py")) as f:
            ours = [l for l in f.read().splitlines()
                    if l.strip() and not l.startswith("#") and l != "import os"]
        seed = [l for l in SEED_SNIPPET.splitlines() if l.strip()]
        diff = [(a, b) for a, b in zip(seed, ours) if a != b]
        self.assertEqual(len(ours), len(seed))
        self.assertEqual(len(diff), 1, diff)
        self.assertIn("socket.connect(", diff[0][1])


if __name__ == "__main__":
    bp.main()
