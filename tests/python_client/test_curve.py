#!/usr/bin/python3
"""CURVE: the broker's key files and pyzmq agree, both ways.

- Files `smartshop-broker --keygen` writes are read by pyzmq's
  zmq.auth.load_certificate and by smartshop.keys (the same pair).
- Certificates pyzmq's zmq.auth.create_certificates writes are read by the
  broker (--curve-secret-key, the broker's own key) and by smartshop-ctl
  (--server-key), and by smartshop.keys.
- Files in the format --keygen wrote before (one bare key line) are still
  read by the broker and by smartshop.keys.
- A smartshop Client with such keys registers the names its key is
  allowed (DeniedError for others, NameTakenError for a name another key
  holds); a client without keys gets no handshake (RequestTimeout).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp  # noqa: E402

import zmq  # noqa: E402
import zmq.auth  # noqa: E402

import smartshop  # noqa: E402
from smartshop import Curve, errors, keys  # noqa: E402


def keygen(prefix):
    out = subprocess.run([bp.broker_path(), "--keygen", prefix], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr


def ctl_path():
    return os.path.join(os.path.dirname(bp.broker_path()), "smartshop-ctl")


class KeyFilesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smartshop-curve-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def test_keygen_files_are_read_by_pyzmq_and_by_smartshop(self):
        keygen(self.path("b"))
        public, secret = zmq.auth.load_certificate(self.path("b.key"))
        self.assertEqual(zmq.curve_public(secret), public)
        self.assertEqual(zmq.auth.load_certificate(self.path("b.pub")), (public, None))
        self.assertEqual(keys.load_key_pair(self.path("b")), (public, secret))
        self.assertEqual(keys.load_key(self.path("b.pub")), public)
        self.assertEqual(keys.load_key(self.path("b.key"), secret=True), secret)
        self.assertEqual(keys.load_key(self.path("b.key")), public)   # the public half of it
        # and the readers that take the first line that is not a comment
        with open(self.path("b.pub")) as f:
            first = [line.split()[0] for line in f if line.split() and line.split()[0] != "#"][0]
        self.assertEqual(first.encode(), public)

    def test_pyzmq_certificates_are_read_by_the_broker_ctl_and_smartshop(self):
        pub_file, secret_file = zmq.auth.create_certificates(self.dir, "server")
        os.chmod(secret_file, 0o600)       # pyzmq leaves it to the umask; both tools refuse that
        public, secret = zmq.auth.load_certificate(secret_file)
        self.assertEqual(keys.load_key_pair(secret_file), (public, secret))
        self.assertEqual(keys.load_key(pub_file), public)
        keygen(self.path("ops"))
        ops_pub, ops_secret = zmq.auth.load_certificate(self.path("ops.key"))
        with open(self.path("allow"), "w") as f:
            f.write("%s py-ops-*\n" % ops_pub.decode())
        b = bp.Broker(args=("--curve-secret-key", secret_file, "--curve-allow", self.path("allow")),
                      log_level="info")
        try:
            self.assertIn(public.decode(), b.log_text())          # its key is the certificate's
            out = subprocess.run([ctl_path(), "--endpoint", b.endpoint, "--server-key", pub_file,
                                  "--key", self.path("ops"), "--json", "ping"],
                                 capture_output=True, text=True, timeout=20 * SLOW)
            self.assertEqual(out.returncode, 0, out.stderr)
            with smartshop.Client(b.endpoint, curve=Curve.load(pub_file, self.path("ops"))) as c:
                c.register("py-ops-1")
                self.assertEqual(c.names, ["py-ops-1"])
        finally:
            b.cleanup()

    def test_old_bare_key_files_are_still_read(self):
        public, secret = zmq.curve_keypair()
        with open(self.path("old.pub"), "w") as f:
            f.write("# CURVE public key (smartshop-broker --keygen).\n%s\n" % public.decode())
        fd = os.open(self.path("old.key"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# CURVE secret key (smartshop-broker --keygen). Keep it secret.\n%s\n"
                    % secret.decode())
        self.assertEqual(keys.load_key_pair(self.path("old")), (public, secret))
        open(self.path("allow"), "w").close()
        b = bp.Broker(args=("--curve-secret-key", self.path("old.key"), "--curve-allow",
                            self.path("allow")), log_level="info")
        try:
            self.assertIn(public.decode(), b.log_text())
        finally:
            b.cleanup()

    def test_bad_key_files_are_refused_clearly(self):
        keygen(self.path("k"))
        os.chmod(self.path("k.key"), 0o644)
        with self.assertRaises(PermissionError):
            keys.load_key(self.path("k.key"), secret=True)
        with open(self.path("none"), "w") as f:
            f.write("not a key\ncurve\n    public-key = \"short\"\n")
        with self.assertRaises(ValueError):
            keys.load_key(self.path("none"))
        pub_file, _ = zmq.auth.create_certificates(self.dir, "p")
        os.chmod(pub_file, 0o600)
        with self.assertRaises(ValueError):                # a public certificate has no secret
            keys.load_key(pub_file, secret=True)
        out = bp.run_broker_cli(["--curve-secret-key", pub_file, "--curve-allow", self.path("none")])
        self.assertEqual(out.returncode, 2)
        self.assertIn("no CURVE key", out.stderr)


class CurveBusTest(support.BusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="smartshop-curve-")
        for who in ("broker", "alice", "bob"):
            keygen(os.path.join(cls.dir, who))
        allow = os.path.join(cls.dir, "allow")
        with open(allow, "w") as f:
            for who in ("alice", "bob"):
                f.write("%s py-%s-* py-shared\n" % (keys.load_key(os.path.join(cls.dir, who + ".pub"))
                                                    .decode(), who))
        cls.broker = bp.Broker(args=("--curve-secret-key", os.path.join(cls.dir, "broker.key"),
                                     "--curve-allow", allow))

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def curve(self, who):
        return Curve.load(os.path.join(self.dir, "broker.pub"), os.path.join(self.dir, who))

    def test_allowed_names_denied_names_and_name_taken(self):
        alice = self.client(curve=self.curve("alice"))
        alice.register("py-alice-svc")
        with self.assertRaises(errors.DeniedError):
            alice.register("py-bob-svc")
        alice.register("py-shared")
        bob = self.client(curve=self.curve("bob"))
        with self.assertRaises(errors.NameTakenError):
            bob.register("py-shared")
        svc = smartshop.Service("py-bob-echo", self.broker.endpoint, curve=self.curve("bob"))
        svc.handler("echo")(lambda req: req.payload)
        st = support.ServiceThread(svc)
        self._closers.append(st.stop)
        st.wait_ready()
        self.assertEqual(alice.request("py-bob-echo", "echo", {"k": 1}), {"k": 1})

    def test_keys_as_a_tuple_of_files_or_keys(self):
        d = self.dir
        c = self.client(curve=(os.path.join(d, "broker.pub"), os.path.join(d, "alice.pub"),
                               os.path.join(d, "alice.key")))
        self.assertEqual(c.call_broker("ping")["status"], "ok")
        k = (keys.load_key(os.path.join(d, "broker.pub")), keys.load_key(os.path.join(d, "alice.pub")),
             keys.load_key(os.path.join(d, "alice.key"), secret=True))
        self.assertEqual(self.client(curve=k).call_broker("ping")["status"], "ok")

    def test_without_keys_no_handshake(self):
        c = self.client()
        # nothing answers: a timeout, or no connection to queue on at all
        with self.assertRaises((errors.RequestTimeout, errors.UnreachableError)) as cm:
            c.call_broker("ping", timeout=0.5)
        self.assertIsNone(cm.exception.reply)

    def test_asyncio_client_with_curve(self):
        import asyncio
        from smartshop.asyncio import Client

        async def main():
            async with Client(self.broker.endpoint, curve=self.curve("alice")) as c:
                await c.register("py-alice-async")
                self.assertIn("py-alice-async", (await c.call_broker("ping"))["registered"])

        asyncio.run(main())


if __name__ == "__main__":
    unittest.main(verbosity=2)
