#!/usr/bin/python3
"""Staying up: services (sync and asyncio) register again by themselves
after the broker is killed with SIGKILL and restarted on the same port,
both after a short outage (the heartbeat's ping shows the names missing,
L4) and after a long one (no word for dead_after: a new socket); a service
started before its broker waits for it; SIGTERM stops a service process
cleanly (exit 0, its name dropped)."""
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import FAST, SLOW, bp, unique  # noqa: E402

import smartshop  # noqa: E402
import smartshop.asyncio as ssa  # noqa: E402


class AsyncServiceThread:
    """A smartshop.asyncio.Service running on its own loop in a thread."""

    def __init__(self, name, endpoint):
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.svc = ssa.Service(name, endpoint, **FAST)

        @self.svc.handler("echo")
        async def echo(req):
            await asyncio.sleep(0)
            return {"async": req.payload}

        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(5 * SLOW):
            raise AssertionError("asyncio service not ready")

    def _run(self):
        try:
            self.loop.run_until_complete(self.svc.run(signals=(), on_ready=self.ready.set))
        finally:
            self.loop.close()

    def stop(self):
        self.loop.call_soon_threadsafe(self.svc.stop)
        self.thread.join(10 * SLOW)


class RestartTest(unittest.TestCase):
    def setUp(self):
        self.port = bp.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.brokers = []
        self.closers = []

    def tearDown(self):
        for close in reversed(self.closers):
            close()
        for b in self.brokers:
            b.cleanup()

    def start_broker(self):
        b = bp.Broker(port=self.port)
        self.brokers.append(b)
        return b

    def kill_and_restart(self, outage):
        b = self.brokers[-1]
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        time.sleep(outage)
        return self.start_broker()

    def both_services(self):
        sync_name, async_name = unique("py-rs"), unique("py-ra")
        svc = smartshop.Service(sync_name, self.endpoint, **FAST)
        svc.handler("echo")(lambda req: {"sync": req.payload})
        st = support.ServiceThread(svc)
        self.closers.append(st.stop)
        st.wait_ready()
        at = AsyncServiceThread(async_name, self.endpoint)
        self.closers.append(at.stop)
        client = smartshop.Client(self.endpoint, **FAST)
        self.closers.append(client.close)
        return sync_name, async_name, client

    def check_registered_again(self, outage):
        self.start_broker()
        sync_name, async_name, client = self.both_services()
        self.assertEqual(client.request(sync_name, "echo", 1), {"sync": 1})
        self.assertEqual(client.request(async_name, "echo", 1), {"async": 1})
        self.kill_and_restart(outage)
        for name, key in ((sync_name, "sync"), (async_name, "async")):
            self.assertTrue(support.wait_until(lambda: support.listed(client, name) == 1, 10),
                            "%s not registered again after the restart" % name)
            self.assertEqual(client.request(name, "echo", 2, timeout=5 * SLOW), {key: 2})

    def test_short_outage_the_ping_shows_the_names_missing(self):
        self.check_registered_again(0.0)

    def test_long_outage_new_socket_and_registered_again(self):
        self.check_registered_again(FAST["dead_after"] + 1.0 * SLOW)

    def test_requests_while_the_broker_is_down_time_out(self):
        self.start_broker()
        sync_name, _, client = self.both_services()
        self.kill_and_restart(0.0)     # restarted...
        b = self.brokers[-1]
        b.proc.send_signal(signal.SIGKILL)   # ...and gone again
        b.proc.wait()
        with self.assertRaises((smartshop.RequestTimeout, smartshop.UnreachableError)) as cm:
            client.request(sync_name, "echo", 3, timeout=0.5)
        self.assertIsNone(cm.exception.reply)
        self.start_broker()
        self.assertTrue(support.wait_until(lambda: support.listed(client, sync_name) == 1, 10))

    def test_a_service_started_before_its_broker_waits_for_it(self):
        name = unique("py-early")
        svc = smartshop.Service(name, self.endpoint, **FAST)
        svc.handler("echo")(lambda req: req.payload)
        st = support.ServiceThread(svc, register_timeout=0.5)
        self.closers.append(st.stop)
        time.sleep(0.8)
        self.assertFalse(st.ready.is_set())
        self.start_broker()
        st.wait_ready(10)
        client = smartshop.Client(self.endpoint)
        self.closers.append(client.close)
        self.assertEqual(client.request(name, "echo", "hi"), "hi")


class SigtermTest(unittest.TestCase):
    def run_service_process(self, script):
        b = bp.Broker()
        self.addCleanup(b.cleanup)
        proc = subprocess.Popen([bp.PYTHON, script, "--endpoint", b.endpoint], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        client = smartshop.Client(b.endpoint)
        self.addCleanup(client.close)
        self.assertTrue(support.wait_until(lambda: support.listed(client, "echo-service") == 1, 10))
        self.assertEqual(client.request("echo-service", "echo", {"n": 1}), {"n": 1})
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10 * SLOW)
        self.assertEqual(proc.returncode, 0, out)
        self.assertNotIn("Traceback", out)
        self.assertIn("stopping", out)
        self.assertTrue(support.wait_until(lambda: support.listed(client, "echo-service") == 0, 5))

    def test_sigterm_stops_the_sync_example_cleanly(self):
        self.run_service_process(os.path.join(bp.EXAMPLES, "echo_service.py"))

    def test_sigterm_stops_the_asyncio_example_cleanly(self):
        self.run_service_process(os.path.join(bp.EXAMPLES, "async_echo_service.py"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
