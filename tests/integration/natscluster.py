"""Fixture for the tests of several brokers on one bus (docs/protocol.md X1-X12).

NatsCluster  three real nats-server processes (Debian's nats-server) on free
             loopback ports, a full mesh of cluster routes, each with its own
             monitoring port; waits until every route is up. kill(i),
             start(i) for failure tests; stop() at the end.
BusTestCase  a unittest.TestCase with one cluster and three brokers per
             class: A on n1 first, B on n2 first, C on n3 first (each lists
             all three servers), ids A, B, C. Peers made with peer(broker)
             are closed after each test.
reach(client, service, name) sends probe requests from `client` until one
             reaches `service` (interest crosses the cluster asynchronously,
             SCALEOUT.md N5), answering them as the service.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

from brokerproc import SLOW, Broker, error_code, free_port, msg  # noqa: F401

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
_SERVERS = []


def _kill_leftovers():
    for s in _SERVERS:
        if s.poll() is None:
            s.kill()
            s.wait()


import atexit  # noqa: E402
atexit.register(_kill_leftovers)


class NatsCluster:
    """Three nats-server nodes n1..n3 in one cluster, on loopback."""

    def __init__(self, size=3, extra_conf=""):
        self.dir = tempfile.mkdtemp(prefix="smartshop-nats-")
        self.size = size
        self.ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.http_ports = [free_port() for _ in range(size)]
        self.extra_conf = extra_conf
        self.procs = [None] * size
        for i in range(size):
            self._write_conf(i)
            self.start(i, wait=False)
        self.wait_routes()

    def url(self, i):
        return "nats://127.0.0.1:%d" % self.ports[i]

    def urls(self, first=0):
        order = [(first + k) % self.size for k in range(self.size)]
        return ",".join(self.url(i) for i in order)

    def _write_conf(self, i):
        routes = ", ".join("nats://127.0.0.1:%d" % p for j, p in enumerate(self.cluster_ports)
                           if j != i)
        conf = (
            'server_name: n%d\n'
            'listen: 127.0.0.1:%d\n'
            'http: 127.0.0.1:%d\n'
            'ping_interval: "2s"\n'
            'ping_max: 2\n'
            'write_deadline: "2s"\n'
            'cluster {\n  name: smartshop\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n%s'
            % (i + 1, self.ports[i], self.http_ports[i], self.cluster_ports[i], routes,
               self.extra_conf))
        with open(os.path.join(self.dir, "n%d.conf" % (i + 1)), "w") as f:
            f.write(conf)

    def start(self, i, wait=True):
        log = open(os.path.join(self.dir, "n%d.log" % (i + 1)), "ab")
        self.procs[i] = subprocess.Popen(
            [NATS_SERVER, "-c", os.path.join(self.dir, "n%d.conf" % (i + 1))],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        _SERVERS.append(self.procs[i])
        if wait:
            self.wait_routes()

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(10)
        self.procs[i] = None

    def alive(self):
        return [i for i in range(self.size) if self.procs[i] and self.procs[i].poll() is None]

    def monitor(self, i, path):
        with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (self.http_ports[i], path),
                                    timeout=1) as r:
            return json.loads(r.read())

    def wait_routes(self, timeout=15.0):
        """Until every live node has a route to every other live node."""
        deadline = time.monotonic() + timeout * SLOW
        live = self.alive()
        while time.monotonic() < deadline:
            try:
                if all(self.monitor(i, "routez").get("num_routes", 0) >= len(live) - 1
                       for i in live):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("nats cluster routes not up within %.0f s" % timeout)

    def connections(self, i):
        """The client connections of node i, by name (brokers name theirs by broker id)."""
        return [c.get("name", "") for c in self.monitor(i, "connz").get("connections", [])]

    def stop(self):
        for i in range(self.size):
            self.kill(i, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


def bus_broker(cluster, broker_id, first, args=(), **kw):
    """A broker with --nats listing every node of `cluster`, node `first` first."""
    return Broker(args=["--nats", cluster.urls(first), "--broker-id", broker_id] + list(args),
                  **kw)


def wait_bus_connected(broker, timeout=10.0):
    broker.wait_for_log(r"joined the bus", timeout=timeout * SLOW)


def reach(client, service, name, timeout=10.0):
    """Probe until a request from `client` to `name` reaches `service` (which answers it).

    Any of the probes sent counts: on a loaded machine one may arrive after
    the next was sent, and waiting for the newest only would stay one behind
    for ever. Probes still on their way when one got through are answered
    and drained, so that the caller's next message is its own."""
    deadline = time.monotonic() + timeout * SLOW
    sent = set()

    def answer_probes(wait):
        got = []
        for frames in service.drain(wait):
            body = json.loads(frames[-1])
            if body.get("msg_id") in sent:
                service.answer(body, {"probe": True})
                got.append(body["msg_id"])
        return got

    while time.monotonic() < deadline:
        sent.add(client.request(name, action="probe", ttl_ms=int(2000 * SLOW))["msg_id"])
        got = answer_probes(0.2 * SLOW)
        if got:
            client.recv_answer(got[0], 2 * SLOW)
            answer_probes(0.3 * SLOW)
            client.drain(0.05)
            return
        # nobody got it: it was answered no_such_service (or will be)
        client.drain(0.05)
        time.sleep(0.05)
    raise AssertionError("%s never reached across the bus" % name)


def round_trip(client, service, name, payload=None, answer=None, ttl_ms=None):
    """One request from `client` to `name`, which `service` receives and
    answers with `answer`; the requester's answer body."""
    m = client.request(name, payload=payload, ttl_ms=ttl_ms or int(2000 * SLOW))
    _, req = service.recv(2 * SLOW)
    service.answer(req, answer if answer is not None else {})
    _, body = client.recv_answer(m["msg_id"], 2 * SLOW)
    return body


def gone_from_bus(client, name, timeout=10.0):
    """Until a request from `client` to `name` is answered no_such_service."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        m = client.request(name, action="probe", ttl_ms=int(500 * SLOW))
        _, body = client.recv_answer(m["msg_id"], 2 * SLOW)
        if error_code(body) == "no_such_service":
            return
        time.sleep(0.05)
    raise AssertionError("%s still reachable across the bus" % name)


class BusTestCase(unittest.TestCase):
    """One cluster (3 nodes unless CLUSTER_SIZE says) and brokers A, B, C
    (or BROKER_IDS) per class, broker i listing node i % size first."""

    BROKER_ARGS = ()
    PER_BROKER_ARGS = {}        # {"A": [...]}: more flags for one broker
    CLUSTER_CONF = ""
    CLUSTER_SIZE = 3
    BROKER_IDS = ("A", "B", "C")

    @classmethod
    def setUpClass(cls):
        cls.cluster = NatsCluster(size=cls.CLUSTER_SIZE, extra_conf=cls.CLUSTER_CONF)
        cls.brokers = {}
        try:
            for i, bid in enumerate(cls.BROKER_IDS):
                cls.brokers[bid] = bus_broker(cls.cluster, bid, i % cls.CLUSTER_SIZE,
                                              list(cls.BROKER_ARGS) +
                                              list(cls.PER_BROKER_ARGS.get(bid, ())))
            for b in cls.brokers.values():
                wait_bus_connected(b)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for b in cls.brokers.values():
            if b.alive():
                b.send_signal(signal.SIGCONT)       # if a test left it stopped
                b.stop()
        cls.cluster.stop()

    def setUp(self):
        self._peers = []

    def tearDown(self):
        for p in self._peers:
            p.close()

    def peer(self, broker_id, name=None, identity=None):
        p = self.brokers[broker_id].peer(identity=identity)
        self._peers.append(p)
        if name:
            p.register(name)
        return p
