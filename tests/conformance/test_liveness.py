"""L1-L4: connections and liveness (docs/protocol.md section 10); L5 (limits): test_profile_limits.py."""

import socket
import struct
import time
import unittest

from bus import BusTest, env, enc, new_id, uname, t, CONFIG


class RawZmtp:
    """A minimal ZMTP 3.1 DEALER over a plain socket (NULL mechanism), to
    see what libzmq peers never show: the broker's heartbeat PING commands."""

    def __init__(self, endpoint, timeout):
        if endpoint.startswith("tcp://"):
            host, port = endpoint[6:].rsplit(":", 1)
            self.s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        elif endpoint.startswith("ipc://"):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(endpoint[6:])
        else:
            raise unittest.SkipTest("L3: raw ZMTP check needs a tcp:// or ipc:// endpoint")
        self.s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\x00")
                       + b"\x00" + b"\x00" * 31)
        g = self.exact(64)
        if g[0] != 0xFF or g[9] != 0x7F:
            raise AssertionError("not a ZMTP greeting: %r" % g)
        if g[12:32].rstrip(b"\x00") != b"NULL":
            self.close()
            raise unittest.SkipTest("L3: the broker uses mechanism %r; the raw check speaks NULL only" % g[12:32])
        prop = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
        self.send_frame(b"\x05READY" + prop, command=True)

    def close(self):
        self.s.close()

    def exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed by the broker")
            buf += chunk
        return buf

    def send_frame(self, body, command=False, more=False):
        flags = (0x04 if command else 0) | (0x01 if more else 0)
        if len(body) > 255:
            self.s.sendall(bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body)
        else:
            self.s.sendall(bytes([flags, len(body)]) + body)

    def read_frame(self):
        flags = self.exact(1)[0]
        size = struct.unpack(">Q", self.exact(8))[0] if flags & 0x02 else self.exact(1)[0]
        return flags, self.exact(size)

    def next_ping(self):
        """Read frames until a PING command; return its TTL (deciseconds)."""
        while True:
            flags, body = self.read_frame()
            if flags & 0x04 and body[:5] == b"\x04PING":
                return struct.unpack(">H", body[5:7])[0]


class Liveness(BusTest):

    def test_L1_same_identity_never_takes_over(self):
        ident = ("ct-id-" + new_id()).encode()
        a = self.peer(uname("l1"), identity=ident)
        self.register(a)
        b = self.peer(uname("l1b"), identity=ident)
        b.send(env("register", a.name, "broker", "register"))
        b.send(env("request", b.name, "broker", "ping"))
        self.expect_nothing(b, 0.5, "the second connection with an identity in use is not admitted")
        self.assertEqual(self.ping(a), {a.name})
        self.assertEqual(self.instances(a, a.name), 1)
        cli = self.peer(uname("cli"))
        m = cli.send(env("request", cli.name, a.name, "work"))
        r = self.expect(a, what="the request at the first connection")
        self.assertEqual(r["msg_id"], m["msg_id"])
        self.expect_nothing(b, 0.1)

    def test_L2_disconnect_drops_registrations(self):
        name, other = uname("l2"), uname("l2b")
        s = self.peer(name)
        self.register(s)
        self.register(s, other)
        obs = self.peer(uname("obs"))
        self.assertEqual(self.instances(obs, name), 1)
        s.close()
        self.assertTrue(self.wait_until(lambda: self.instances(obs, name) == 0
                                        and self.instances(obs, other) == 0, 2.0),
                        "registrations still listed after the peer disconnected")
        m = obs.send(env("request", obs.name, name, "work"))
        self.expect_error(obs, "no_such_service", corr=m["msg_id"])

    def test_L3_broker_sends_transport_heartbeats(self):
        raw = RawZmtp(CONFIG.endpoint, t(3.0))
        self.addCleanup(raw.close)
        t0 = time.monotonic()
        ttl = raw.next_ping()
        dt = time.monotonic() - t0
        self.assertGreaterEqual(dt, 0.5, "PING interval should be 1000 ms, first after %.2fs" % dt)
        self.assertLessEqual(dt, t(1.8), "PING interval should be 1000 ms, first after %.2fs" % dt)
        self.assertEqual(ttl, 30, "ZMQ_HEARTBEAT_TTL should be 3000 ms (30 deciseconds)")

    @unittest.skipUnless(CONFIG.slow, "L3: the passive-peer check takes ~5 s; run with --slow")
    def test_L3_passive_peer_stays_registered(self):
        svc = self.peer(uname("l3"))
        self.register(svc)
        self.expect_nothing(svc, 4.5, "nothing while idle")
        obs = self.peer(uname("obs"))
        self.assertEqual(self.instances(obs, svc.name), 1)
        m = obs.send(env("request", obs.name, svc.name, "work"))
        self.assertEqual(self.expect(svc)["msg_id"], m["msg_id"])

    @unittest.skipUnless(CONFIG.slow, "L3: the silent-peer check takes ~5 s; run with --slow")
    def test_L3_silent_peer_dropped_after_heartbeat_timeout(self):
        raw = RawZmtp(CONFIG.endpoint, t(6.0))
        self.addCleanup(raw.close)
        name = uname("l3silent")
        raw.send_frame(enc(env("register", name, "broker", "register")))
        obs = self.peer(uname("obs"))
        self.assertTrue(self.wait_until(lambda: self.instances(obs, name) == 1, 1.0))
        t0 = time.monotonic()
        with self.assertRaises((EOFError, ConnectionResetError)):
            while time.monotonic() - t0 < t(6.0):
                raw.read_frame()     # never answer the PINGs
        self.assertLessEqual(time.monotonic() - t0, t(5.5))
        self.assertTrue(self.wait_until(lambda: self.instances(obs, name) == 0, 1.0))

    def test_L4_unknown_peer_sees_no_registrations(self):
        # What a peer sees after a broker restart: the broker knows nothing of it.
        p = self.peer(uname("l4"))
        self.assertEqual(self.ping(p), set())
        a = p.send(env("response", p.name, uname("x"), "work", correlation_id=new_id()))
        self.expect_error(p, "unknown_request", corr=a["msg_id"])

