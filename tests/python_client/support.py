"""Shared set-up for the smartshop (Python library) tests.

Puts tests/integration (brokerproc, the broker fixture) and python/ (the
smartshop package, as it is in the tree) on sys.path, and adds helpers:
service_thread() runs a smartshop.Service in a thread, fast_client_options
make heartbeats quick so restarts are seen within a second or two.
Run each test_*.py alone with /usr/bin/python3, as the integration tests.
"""
import logging
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON_DIR = os.path.join(REPO_ROOT, "python")
for path in (os.path.join(REPO_ROOT, "tests", "integration"), PYTHON_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

import brokerproc as bp  # noqa: E402
import smartshop  # noqa: E402

assert os.path.dirname(os.path.abspath(smartshop.__file__)) == os.path.join(PYTHON_DIR, "smartshop"), \
    "testing a smartshop other than the tree's: %s" % smartshop.__file__

SLOW = bp.SLOW
# heartbeats fast enough that a broker restart is noticed within ~1 s
FAST = dict(heartbeat=0.2 * SLOW, dead_after=1.5 * SLOW, reconnect_max=1.0)

logging.basicConfig(level=logging.WARNING, format="%(threadName)s %(name)s %(levelname)s %(message)s")


def unique(prefix):
    """A service name no other test (or earlier run) uses."""
    return bp.new_id(prefix)[:40]


class ServiceThread:
    """A smartshop.Service running its run() in a thread (no signal handlers)."""

    def __init__(self, svc, **run_kw):
        self.svc = svc
        self.ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, kwargs=run_kw, daemon=True)
        self.thread.start()

    def _run(self, **kw):
        try:
            self.svc.run(signals=(), on_ready=self.ready.set, **kw)
        except BaseException as exc:  # noqa: BLE001 - reported by wait_ready/stop
            self.error = exc
            self.ready.set()

    def wait_ready(self, timeout=5.0):
        if not self.ready.wait(timeout * SLOW):
            raise AssertionError("service %s not registered within %.1f s"
                                 % (self.svc.service_names, timeout))
        if self.error:
            raise self.error
        return self

    def stop(self):
        self.svc.stop()
        self.thread.join(10 * SLOW)
        if self.thread.is_alive():
            raise AssertionError("service thread did not stop")


def wait_until(pred, timeout=5.0, interval=0.05):
    """pred() true within timeout (scaled by SLOW)? Returns its last value."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def listed(client, name):
    """Instances of `name` the broker lists (0 when none, or no answer)."""
    try:
        body = client.call_broker("list_services", timeout=1.0 * SLOW)
    except smartshop.SmartshopError:
        return 0
    return {s["name"]: s["instances"] for s in body.get("services", [])}.get(name, 0)


class BusTestCase(bp.BrokerTestCase):
    """A broker per class (BROKER_ARGS), smartshop clients and services
    closed after each test: self.client(...), self.service(...)."""

    def setUp(self):
        super().setUp()
        self._closers = []

    def tearDown(self):
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # noqa: BLE001
                print("cleanup failed: %r" % exc, file=sys.stderr)
        super().tearDown()

    def client(self, endpoint=None, **kw):
        c = smartshop.Client(endpoint or self.broker.endpoint, **kw)
        self._closers.append(c.close)
        return c

    def service(self, names, handlers=None, endpoint=None, **kw):
        """A Service with `handlers` ({action: fn}), running in a thread, registered."""
        svc = smartshop.Service(names, endpoint or self.broker.endpoint, **kw)
        for action, fn in (handlers or {}).items():
            svc.handler(action)(fn)
        st = ServiceThread(svc)
        self._closers.append(st.stop)
        return st.wait_ready()
