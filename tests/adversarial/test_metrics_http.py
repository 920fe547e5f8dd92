#!/usr/bin/python3
"""The --metrics HTTP endpoint under attack (docs/security.md "Metrics and
listings"): idle connections, oversized or wrong requests, a request
trickled in pieces, a flood of scrapes over 1000 series. Connections past
--metrics-max-connections get 503 and are closed; one that sends no
complete request, or stops taking its answer, is closed after
--metrics-idle-timeout-ms; a request over --metrics-max-request-bytes gets
431; the answer goes out in pieces from one shared rendering, so a scrape
flood never stalls the bus.

The endpoint is libmicrohttpd now (src/http.c), which answers with
HTTP/1.1 status lines: the checks take either version.

Before the fix idle connections stayed open for ever (using up the
broker's descriptors), every received chunk was answered with a new
rendering made a printf per label character, and 40 scrapes of 1,100
series stalled routing for seconds."""
import os
import re
import socket
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402
from metrics_bystander import stalls_no_one  # noqa: E402

IDLE_MS = 500
MAX_CONNECTIONS = 8


def read_all(sock, timeout):
    """Everything until the server closes (or `timeout` s pass: None)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def status(answer):
    """The status code of an answer ("HTTP/1.x NNN ..."), or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer or b"")
    return int(m.group(1)) if m else None


def split(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


class EndpointTest(bp.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = bp.free_port()
        cls.BROKER_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % cls.port,
                           "--metrics-idle-timeout-ms", str(IDLE_MS),
                           "--metrics-max-connections", str(MAX_CONNECTIONS),
                           "--log-level", "warn")
        super().setUpClass()
        # 1000 series: one service, 1000 actions
        svc = cls.broker.peer()
        svc.register("m-http-svc")
        client = cls.broker.peer()
        for batch in range(4):
            for i in range(250):
                client.request("m-http-svc", "act-%d-%d" % (batch, i), src="m-http-client")
            for i in range(250):
                _, got = svc.recv(10 * bp.SLOW)
                svc.answer(got)
            for i in range(250):
                client.recv(10 * bp.SLOW)
        cls.svc, cls.client = svc, client

    @classmethod
    def tearDownClass(cls):
        cls.svc.close()
        cls.client.close()
        super().tearDownClass()

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(s.close)
        return s

    def scrape(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port,
                                    timeout=10 * bp.SLOW) as r:
            return r.status, r.read()

    def wait_slots_free(self):
        """Until a scrape gets a slot again (earlier tests' connections closed)."""
        deadline = time.monotonic() + 5 * bp.SLOW
        while True:
            try:
                return self.scrape()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def test_idle_connections_are_closed(self):
        self.wait_slots_free()
        socks = [self.connect() for _ in range(60)]
        start = time.monotonic()
        answers = [read_all(s, 5 * bp.SLOW + IDLE_MS / 1000) for s in socks]
        self.assertNotIn(None, answers, "a connection that sent nothing was kept open")
        refused = [a for a in answers if status(a) == 503]
        self.assertGreaterEqual(len(refused), 60 - MAX_CONNECTIONS)
        self.assertGreaterEqual(time.monotonic() - start, IDLE_MS / 1000 * 0.9)
        # the endpoint and the bus still work
        self.assertEqual(self.wait_slots_free()[0], 200)
        self.assertEqual(self.peer().call_broker("ping", src="m-http-pinger")["payload"]["status"], "ok")

    def test_a_request_over_the_byte_bound_gets_431(self):
        self.wait_slots_free()
        s = self.connect()
        s.sendall(b"GET /metrics HTTP/1.0\r\n")
        try:
            for i in range(40):
                s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 500))
        except OSError:
            pass                # the broker may close before all is sent
        answer = read_all(s, 5 * bp.SLOW)
        self.assertIsNotNone(answer, "not closed")
        self.assertEqual(status(answer), 431, answer[:100])
        self.assertEqual(len(re.findall(rb"HTTP/1\.[01] ", answer)), 1, "answered more than once")

    def test_a_request_in_small_chunks_is_answered_once(self):
        self.wait_slots_free()
        s = self.connect()
        for piece in (b"GE", b"T /metrics HTTP/1.0\r\n", b"Host: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.02)
        head, body = split(read_all(s, 10 * bp.SLOW))
        self.assertEqual(status(head.encode()), 200, head)
        length = int([l for l in head.split("\r\n") if l.lower().startswith("content-length")][0]
                     .split(":")[1])
        self.assertEqual(len(body), length)
        self.assertEqual(body.count(b"# TYPE smartshop_uptime_seconds"), 1)
        self.assertIn(b'smartshop_requests_total{service="m-http-svc",action="act-0-0",dst="m-http-svc"} 1', body)

    def test_other_methods_get_405(self):
        self.wait_slots_free()
        s = self.connect()
        s.sendall(b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        answer = read_all(s, 5 * bp.SLOW)
        self.assertEqual(status(answer), 405, answer[:100])

    def test_a_flood_of_scrapes_stalls_no_one(self):
        self.wait_slots_free()
        statuses = []

        def attack():
            for _ in range(3):
                socks = [self.connect() for _ in range(40)]
                for s in socks:
                    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                for s in socks:
                    answer = read_all(s, 30 * bp.SLOW)
                    statuses.append(status(answer) if answer is not None else None)

        stalls_no_one(self, self.broker, attack)
        self.assertNotIn(None, statuses)
        self.assertGreater(statuses.count(200), 0)
        self.assertEqual(set(statuses) - {200, 503}, set())


if __name__ == "__main__":
    bp.main()
