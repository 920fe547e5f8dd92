"""The nats-server configuration docs/operations.md tells operators to copy,
run as written (the "conf nats-hub" and "conf nats-leaf" blocks, with
loopback ports, a test CA and test nkeys put in): three TLS hub nodes in
a cluster, a store's leaf attached over TLS, one nkey per broker with
permissions limited to the bus's subjects.

A broker on the leaf reaches a service on a broker on the hub; a broker
without an nkey, or speaking plain TCP to a TLS server, cannot join; a
broker using another's id cannot read that broker's answers.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request
import json

from brokerproc import REPO_ROOT, SLOW, Broker, broker_path, error_code, free_port
from natscluster import NATS_SERVER, _SERVERS, reach, round_trip, wait_bus_connected

OPS_DOC = os.path.join(REPO_ROOT, "docs", "operations.md")


def doc_block(tag):
    with open(OPS_DOC) as f:
        text = f.read()
    m = re.search(r"```conf %s\n(.*?)\n```" % re.escape(tag), text, re.S)
    assert m, "no ```conf %s block in docs/operations.md" % tag
    return m.group(1) + "\n"


def nkey_pair(prefix):
    out = subprocess.run([broker_path(), "--nats-keygen", prefix], capture_output=True,
                         text=True, timeout=5)
    assert out.returncode == 0, out.stderr
    with open(prefix + ".nk.pub") as f:
        return f.read().strip()


def user_entries(block, keys):
    """The block's one broker user, once per (broker id, public key)."""
    m = re.search(r"(\{ nkey: STORE1_BROKER_NKEY.*?\} \})", block, re.S)
    assert m, "the users entry changed shape"
    entries = [m.group(1).replace("STORE1_BROKER_NKEY", key).replace(".store1.", ".%s." % bid)
               for bid, key in keys]
    return block.replace(m.group(1), "\n    ".join(entries))


class BusSecurity(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        try:
            cls.set_up()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
        cls.dir = tempfile.mkdtemp(prefix="smartshop-natssec-")
        cls.procs = []
        d = cls.dir
        tls = os.path.join(d, "tls")
        os.mkdir(tls)

        def openssl(*args):
            subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tls + "/ca.key",
                "-out", tls + "/ca.crt", "-days", "2", "-subj", "/CN=smartshop test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", tls + "/node.key",
                "-out", tls + "/node.csr", "-subj", "/CN=hub")
        with open(tls + "/ext", "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", tls + "/node.csr", "-CA", tls + "/ca.crt", "-CAkey",
                tls + "/ca.key", "-CAcreateserial", "-out", tls + "/node.crt", "-days", "2",
                "-extfile", tls + "/ext")
        cls.ca = tls + "/ca.crt"
        cls.keys = {bid: nkey_pair(os.path.join(d, bid)) for bid in ("store1", "store1b", "store2")}
        nkey_pair(os.path.join(d, "intruder"))

        n = 3
        client = [free_port() for _ in range(n)]
        route = [free_port() for _ in range(n)]
        leafp = [free_port() for _ in range(n)]
        http = [free_port() for _ in range(n)]
        hub = doc_block("nats-hub")
        hub = user_entries(hub, [("store1", cls.keys["store1"]), ("store2", cls.keys["store2"])])
        for i in range(n):
            conf = hub.replace("server_name: hub1", "server_name: hub%d" % (i + 1))
            conf = conf.replace("/etc/nats/tls/hub1.crt", tls + "/node.crt")
            conf = conf.replace("/etc/nats/tls/hub1.key", tls + "/node.key")
            conf = conf.replace("/etc/nats/tls/ca.crt", cls.ca)
            conf = conf.replace("0.0.0.0:4222", "127.0.0.1:%d" % client[i])
            conf = conf.replace("127.0.0.1:8222", "127.0.0.1:%d" % http[i])
            conf = conf.replace("0.0.0.0:6222", "127.0.0.1:%d" % route[i])
            conf = conf.replace("0.0.0.0:7422", "127.0.0.1:%d" % leafp[i])
            # the doc's route URLs (with their credentials), to the other nodes
            prefix = re.search(r'routes: \[\s*"(tls://[^@"]*@)', conf).group(1)
            others = ", ".join('"%s127.0.0.1:%d"' % (prefix, route[j]) for j in range(n) if j != i)
            conf = re.sub(r"routes: \[.*?\]", "routes: [ %s ]" % others, conf, flags=re.S)
            cls.start_server(conf, "hub%d" % (i + 1))
        cls.hub_client, cls.hub_http = client, http
        cls.leaf_port, leaf_http = free_port(), free_port()
        cls.leaf_http = leaf_http
        leaf = doc_block("nats-leaf")
        leaf = user_entries(leaf, [("store1", cls.keys["store1"]), ("store1b", cls.keys["store1b"])])
        leaf = leaf.replace("127.0.0.1:4222", "127.0.0.1:%d" % cls.leaf_port)
        leaf = leaf.replace("127.0.0.1:8222", "127.0.0.1:%d" % leaf_http)
        leaf = leaf.replace("/etc/nats/tls/ca.crt", cls.ca)
        for i in range(n):
            leaf = leaf.replace("hub%d.example.net:7422" % (i + 1), "127.0.0.1:%d" % leafp[i])
        cls.start_server(leaf, "leaf")
        cls.wait_monitor(leaf_http, "leafz", lambda j: len(j.get("leafs") or []) >= 1, "leaf")
        for i in range(n):
            cls.wait_monitor(http[i], "routez", lambda j: j.get("num_routes", 0) >= n - 1, "routes")
        cls.s1 = Broker(args=["--nats", "nats://127.0.0.1:%d" % cls.leaf_port, "--broker-id",
                              "store1", "--nats-nkey", os.path.join(d, "store1.nk")])
        cls.s2 = Broker(args=["--nats", "tls://127.0.0.1:%d" % client[1], "--broker-id", "store2",
                              "--nats-nkey", os.path.join(d, "store2.nk"), "--nats-ca", cls.ca])
        cls.s1b = Broker(args=["--nats", "nats://127.0.0.1:%d" % cls.leaf_port, "--broker-id",
                               "store1b", "--nats-nkey", os.path.join(d, "store1b.nk")])
        wait_bus_connected(cls.s1)
        wait_bus_connected(cls.s1b)
        wait_bus_connected(cls.s2)

    @classmethod
    def start_server(cls, conf, name):
        path = os.path.join(cls.dir, name + ".conf")
        with open(path, "w") as f:
            f.write(conf)
        log = open(os.path.join(cls.dir, name + ".log"), "wb")
        p = subprocess.Popen([NATS_SERVER, "-c", path], stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        log.close()
        _SERVERS.append(p)
        cls.procs.append(p)

    @classmethod
    def wait_monitor(cls, port, path, ok, what):
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (port, path), timeout=1) as r:
                    if ok(json.loads(r.read())):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("%s not up; logs in %s" % (what, cls.dir))

    @classmethod
    def tearDownClass(cls):
        for b in (getattr(cls, "s1", None), getattr(cls, "s1b", None), getattr(cls, "s2", None)):
            if b and b.alive():
                b.stop()
        for p in cls.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_a_request_crosses_from_a_leaf_to_the_hub_over_tls(self):
        with self.s2.peer() as svc, self.s1.peer() as cli:
            svc.register("hq-prices")
            cli.register("till")
            reach(cli, svc, "hq-prices")
            ans = round_trip(cli, svc, "hq-prices", payload={"sku": 1}, answer={"price": 2})
            self.assertEqual(ans["payload"], {"price": 2})

    def test_a_hung_broker_is_passed_by_with_these_permissions(self):
        # the announcements (smartshop.dir) and the sends to one broker
        # (smartshop.to.<id>) pass the doc's permissions: list_services
        # shows the other brokers' names, and a hung holder's share moves
        # to the other holder (X10)
        with self.s1b.peer() as near, self.s2.peer() as far, self.s1.peer() as cli:
            near.register("shelf")
            cli.register("shelf-client")
            reach(cli, near, "shelf")
            far.register("shelf")
            deadline = time.monotonic() + 10 * SLOW
            want = {("shelf", "store1b"), ("shelf", "store2")}
            while True:
                body = cli.call_broker("list_services")["payload"]
                got = {(e["name"], e["broker"]) for e in body.get("remote", [])}
                if want <= got or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertTrue(want <= got, body)
            self.s1b.send_signal(signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 10 * SLOW
                while "store1b" not in cli.call_broker("stats")["payload"]["bus"]["silent"]:
                    self.assertLess(time.monotonic(), deadline, "store1b never silent")
                    time.sleep(0.1)
                for _ in range(10):
                    ans = round_trip(cli, far, "shelf", answer={"ok": True})
                    self.assertEqual(ans["type"], "response", ans)
            finally:
                self.s1b.send_signal(signal.SIGCONT)
            self.assertNotIn("Permissions Violation", self.s1.log_text())

    def test_z_a_cut_wan_keeps_in_store_traffic(self):     # last: it stops the hub
        # the store's two brokers share the leaf; the hub goes silent
        # (all three nodes stopped): requests within the store go on
        with self.s1b.peer() as svc, self.s1.peer() as cli:
            svc.register("store-till")
            cli.register("store-client")
            reach(cli, svc, "store-till")
            hubs = self.procs[:3]
            for p in hubs:
                p.send_signal(signal.SIGSTOP)
            try:
                for _ in range(20):
                    ans = round_trip(cli, svc, "store-till", answer={"ok": True})
                    self.assertEqual(ans["type"], "response", ans)
            finally:
                for p in hubs:
                    p.send_signal(signal.SIGCONT)
                self.wait_monitor(self.leaf_http, "leafz",
                                  lambda j: len(j.get("leafs") or []) >= 1, "leaf again")

    def joins(self, args):
        b = Broker(args=args)
        try:
            time.sleep(1.0 * SLOW)  # noqa: give it the time it would need to join
            with b.peer() as cli:
                cli.register("lonely")
                m = cli.request("hq-prices")
                _, ans = cli.recv_answer(m["msg_id"], 2 * SLOW)
                st = cli.call_broker("stats")["payload"]["bus"]
            return st["connected"], ans, b.log_text()
        finally:
            b.stop()

    def test_no_nkey_no_bus(self):
        connected, ans, log = self.joins(["--nats", "tls://127.0.0.1:%d" % self.hub_client[0],
                                          "--broker-id", "nokey", "--nats-ca", self.ca])
        self.assertFalse(connected)
        self.assertEqual(error_code(ans), "no_such_service")
        self.assertIn("unreachable", ans["payload"]["message"])

    def test_an_unknown_nkey_no_bus(self):
        connected, _, log = self.joins([
            "--nats", "tls://127.0.0.1:%d" % self.hub_client[0], "--broker-id", "intruder",
            "--nats-nkey", os.path.join(self.dir, "intruder.nk"), "--nats-ca", self.ca])
        self.assertFalse(connected)
        # the operator is told why, once, and the broker went on serving
        self.assertRegex(log, r"ERROR the NATS connection is closed: .*serves only its own peers")

    def test_plain_tcp_to_a_tls_server_no_bus(self):
        connected, _, _ = self.joins(["--nats", "nats://127.0.0.1:%d" % self.hub_client[0],
                                      "--broker-id", "plain", "--nats-nkey",
                                      os.path.join(self.dir, "store2.nk")])
        self.assertFalse(connected)

    def test_a_broker_cannot_read_another_brokers_answers(self):
        b = Broker(args=["--nats", "nats://127.0.0.1:%d" % self.leaf_port, "--broker-id",
                         "store2", "--nats-nkey", os.path.join(self.dir, "store1.nk")])
        try:
            b.wait_for_log(r"Permissions Violation for Subscription to \"smartshop\.reply\.store2",
                           timeout=5 * SLOW)
        finally:
            b.stop()


if __name__ == "__main__":
    unittest.main()
