#!/usr/bin/python3
"""Hardening, trust and identity (docs/security.md, "Who a message is
from"): no routing identity a peer chooses reaches a hosted Lua service's
record, under CURVE a key is held to its allow list whatever identity it
uses, and an identity longer than any record is answered without being
copied anywhere."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

ECHO = os.path.join(bp.SERVICES_DIR, "echo.lua")


def services_dir():
    d = tempfile.mkdtemp(prefix="smartshop-adv-")
    shutil.copy(ECHO, os.path.join(d, "echo.lua"))
    return d


def echo_round_trip(test, peer, name="echo-service"):
    m = peer.request(name, "echo", {"n": 1}, src=peer.name)
    _, body = peer.recv_answer(m["msg_id"], timeout=2 * bp.SLOW)
    test.assertEqual(body["type"], "response", body)
    test.assertEqual(body["payload"], {"n": 1})


class HostedIdentityTest(bp.BrokerTestCase):
    """A remote peer whose identity is a hosted service's peer id."""

    @classmethod
    def setUpClass(cls):
        cls.dir = services_dir()
        cls.BROKER_ARGS = ("--services", cls.dir)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.assertTrue(bp.wait_until(lambda: "echo-service" in self.list_names(), 5 * bp.SLOW))

    def list_names(self):
        with self.broker.peer() as p:
            return set(bp.services(p))

    def test_posing_peer_cannot_unregister_the_hosted_service(self):
        for ident in (b"lua:echo.lua", b"lua:echo.lua\x00", b"(hosted) lua:echo.lua"):
            evil = self.broker.peer(identity=ident)
            m = evil.send(bp.msg("unregister", "echo-service", "broker", "unregister"))
            self.expectError(evil, "not_registered", correlation_id=m["msg_id"])
            evil.close()
        self.assertIn("echo-service", self.list_names())

    def test_posing_peer_cannot_send_as_the_hosted_service(self):
        evil = self.broker.peer(identity=b"lua:echo.lua")
        victim = self.broker.peer(name="victim")
        victim.register("victim")
        m = evil.send(bp.msg("event", "echo-service", "victim", "forged"))
        self.expectError(evil, "spoofed_src", correlation_id=m["msg_id"])
        victim.expect_nothing(0.3)
        evil.close()

    def test_posing_peer_leaving_leaves_the_service_running(self):
        # connect, speak, disconnect: the hosted service's record must not
        # be the one dropped (that was a use-after-free, then a double free)
        for _ in range(5):
            # libzmq refuses an identity still in use until the broker has
            # seen the last connection with it go: try again until taken
            deadline = time.monotonic() + 10 * bp.SLOW
            while True:
                evil = self.broker.peer(identity=b"lua:echo.lua")
                try:
                    evil.call_broker("ping", src="evil", timeout=1.0)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                finally:
                    evil.close()
        time.sleep(0.3)
        client = self.broker.peer(name="client-%d" % os.getpid())
        echo_round_trip(self, client)
        self.assertTrue(self.broker.alive())

    def test_removing_the_file_after_a_posing_peer_left_is_clean(self):
        evil = self.broker.peer(identity=b"lua:echo.lua")
        evil.call_broker("ping", src="evil")
        evil.close()
        time.sleep(0.3)
        os.unlink(os.path.join(self.dir, "echo.lua"))
        self.assertTrue(bp.wait_until(lambda: "echo-service" not in self.list_names(), 5 * bp.SLOW))
        shutil.copy(ECHO, os.path.join(self.dir, "echo.lua"))
        self.assertTrue(bp.wait_until(lambda: "echo-service" in self.list_names(), 5 * bp.SLOW))
        self.assertTrue(self.broker.alive())


keygen, read_key = bp.keygen, bp.read_key


class CurveIdentityTest(bp.BrokerTestCase):
    """Under CURVE, a key the allow list gives no names gains nothing by
    choosing a hosted service's identity."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="smartshop-adv-curve-")
        cls.sdir = services_dir()
        cls.broker_pub, _ = keygen(os.path.join(cls.tmp, "broker"))
        cls.nobody = keygen(os.path.join(cls.tmp, "nobody"))
        cls.pay = keygen(os.path.join(cls.tmp, "pay"))
        with open(os.path.join(cls.tmp, "allow"), "w") as f:
            # `nobody` may connect and register nothing
            f.write("%s\n%s payment-service\n" % (cls.nobody[0], cls.pay[0]))
        cls.BROKER_ARGS = ("--curve-secret-key", os.path.join(cls.tmp, "broker.key"),
                           "--curve-allow", os.path.join(cls.tmp, "allow"),
                           "--services", cls.sdir)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        shutil.rmtree(cls.sdir, ignore_errors=True)

    def test_unlisted_names_stay_refused_under_a_hosted_identity(self):
        time.sleep(0.3 * bp.SLOW)
        evil = self.curve_peer(self.nobody, identity=b"lua:echo.lua")
        m = evil.send(bp.msg("register", "payment-service", "broker", "register"))
        self.expectError(evil, "denied", correlation_id=m["msg_id"])
        m = evil.send(bp.msg("event", "echo-service", "payment-service", "forged"))
        self.expectError(evil, "spoofed_src", correlation_id=m["msg_id"])
        body = evil.call_broker("dead_letters", src="evil")
        self.assertEqual(bp.error_code(body), "denied", body)   # not @admin

    def test_listed_key_still_registers(self):
        p = self.curve_peer(self.pay)
        p.register("payment-service")


# --- a raw ZMTP 3.0 peer (rfc.zeromq.org 23/ZMTP, NULL mechanism) -------

def zmtp_frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def zmtp_property(name, value):
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def recv_frame(sock):
    flags = recv_exact(sock, 1)[0]
    size = struct.unpack(">Q", recv_exact(sock, 8))[0] if flags & 2 else recv_exact(sock, 1)[0]
    return flags, recv_exact(sock, size)


def raw_dealer(port, identity):
    """A DEALER that announces `identity` in its READY command, which
    libzmq's own sockets never let one set past 255 bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * bp.SLOW)
    s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
              + b"\x00" + b"\x00" * 31)
    recv_exact(s, 64)                           # the broker's greeting
    ready = b"\x05READY" + zmtp_property(b"Socket-Type", b"DEALER") + \
        zmtp_property(b"Identity", identity)
    s.sendall(zmtp_frame(ready, command=True))
    flags, _ = recv_frame(s)                    # the broker's READY
    assert flags & 4
    return s


class LongIdentityTest(bp.FreshBrokerTestCase):
    """An identity longer than PEER_ID_MAX, at the peer limit and below it.
    A broker per test: the last test's peers may not be seen gone yet."""

    def setUp(self):
        super().setUp()
        self.b = bp.Broker(args=("--max-peers", "2"))

    def raw_request(self, identity):
        s = raw_dealer(self.b.port, identity)
        s.sendall(zmtp_frame(bp.dumps(bp.msg("request", "raw", "broker", "ping"))))
        while True:
            flags, body = recv_frame(s)
            if not flags & 4:
                s.close()
                return bp.loads(body)

    def test_long_identity_is_answered_not_copied(self):
        holders = [self.b.peer(name="h%d" % i) for i in range(2)]
        for i, h in enumerate(holders):
            h.register("holder-%d-%d" % (os.getpid(), i))   # the peer limit is now reached
        for size in (256, 300, 4096, 70000):
            body = self.raw_request(b"A" * size)
            self.assertEqual(bp.error_code(body), "bad_frames", body)
            self.assertIn("identity", body["payload"]["message"])
        self.assertTrue(self.b.alive())
        echo = holders[0].call_broker("ping", src="holder-%d-0" % os.getpid())
        self.assertEqual(echo["type"], "response", echo)
        for h in holders:
            h.close()

    def test_peer_limit_answers_a_stranger_from_its_own_frame(self):
        holders = [self.b.peer(name="g%d" % i) for i in range(2)]
        for i, h in enumerate(holders):
            h.register("limit-%d-%d" % (os.getpid(), i))
        body = self.raw_request(b"B" * 200)
        self.assertEqual(bp.error_code(body), "limit_exceeded", body)
        for h in holders:
            h.close()


class LogFloodTest(bp.FreshBrokerTestCase):
    """Lines any client can cause at will are bounded."""

    def setUp(self):
        super().setUp()
        self.b = bp.Broker()

    def test_register_churn_cannot_flood_the_log(self):
        p = self.b.peer(name="churn")
        sent = 0
        for i in range(1500):
            name = "churn-%d" % i
            p.send(bp.msg("register", name, "broker", "register"))
            p.send(bp.msg("unregister", name, "broker", "unregister"))
            sent += 2
        got = 0
        deadline = time.monotonic() + 20 * bp.SLOW
        while got < sent and time.monotonic() < deadline:
            try:
                p.recv(timeout=1.0)
                got += 1
            except AssertionError:
                break
        self.assertEqual(got, sent)
        churn = [l for l in self.b.log_lines() if "churn-" in l]
        self.assertLess(len(churn), 400, "log lines: %d" % len(churn))
        self.assertGreater(len(churn), 0)
        p.close()

    def test_connect_churn_cannot_flood_the_log(self):
        for i in range(400):
            with self.b.peer(name="c%d" % i) as p:
                p.register("conn-churn-%d" % i)
        time.sleep(1.0 * bp.SLOW)
        lines = [l for l in self.b.log_lines() if "conn-churn-" in l]
        self.assertLess(len(lines), 400, "log lines: %d" % len(lines))


if __name__ == "__main__":
    bp.main()
