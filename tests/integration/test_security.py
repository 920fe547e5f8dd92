#!/usr/bin/python3
"""Security (issue 7, docs/security.md): CURVE with an allow list, names
per key, name_taken, the authorize hook, key files and their errors, and
the plain-mode warning for a non-loopback address."""
import os
import stat
import subprocess
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


keygen, read_key = bp.keygen, bp.read_key


class CurveTest(bp.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        cls.broker_pub, _ = keygen(os.path.join(d, "broker"))
        cls.pay = keygen(os.path.join(d, "payment"))
        cls.any = keygen(os.path.join(d, "anyname"))
        cls.stranger = keygen(os.path.join(d, "stranger"))
        cls.admin = keygen(os.path.join(d, "admin"))
        cls.policy = os.path.join(d, "routing.lua")
        with open(cls.policy, "w") as f:
            f.write('function authorize(msg, peer)\n'
                    '  if msg.action == "refund" and peer.key ~= "%s" then\n'
                    '    return false, "only payment may refund"\n'
                    '  end\nend\n' % cls.pay[0])
        with open(os.path.join(d, "allow"), "w") as f:
            f.write("# key  names\n%s payment-service payment-*\n%s *\n%s @admin\n"
                    % (cls.pay[0], cls.any[0], cls.admin[0]))
        cls.BROKER_ARGS = ("--curve-secret-key", os.path.join(d, "broker.key"),
                           "--curve-allow", os.path.join(d, "allow"), "--policy", cls.policy)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.dir.cleanup()

    def test_listed_key_registers_its_names(self):
        p = self.curve_peer(self.pay)
        p.register("payment-service")
        p.register("payment-eu")

    def test_listed_key_cannot_register_other_names(self):
        p = self.curve_peer(self.pay)
        m = p.send(bp.msg("register", "inventory", "broker", "register"))
        self.expectError(p, "denied", correlation_id=m["msg_id"])

    def test_unlisted_key_cannot_connect(self):
        p = self.curve_peer(self.stranger)
        p.send(bp.msg("request", "stranger", "broker", "ping"))
        p.expect_nothing(1.0)
        self.assertIn("CURVE: refused " + self.stranger[0], self.broker.log_text())

    def test_plain_peer_cannot_connect(self):
        p = self.peer()
        p.send(bp.msg("request", "plain", "broker", "ping"))
        p.expect_nothing(1.0)

    def test_name_held_by_another_key_is_taken(self):
        a = self.curve_peer(self.pay)
        a.register("payment-us")
        b = self.curve_peer(self.any)
        m = b.send(bp.msg("register", "payment-us", "broker", "register"))
        self.expectError(b, "name_taken", correlation_id=m["msg_id"])
        # the same key may run a second instance
        c = self.curve_peer(self.pay)
        c.register("payment-us")

    def test_spoofed_src_is_refused(self):
        a = self.curve_peer(self.pay)
        a.register("payment-ca")
        b = self.curve_peer(self.any)
        m = b.request("somewhere", "x", src="payment-ca")
        self.expectError(b, "spoofed_src", correlation_id=m["msg_id"])

    def test_operator_actions_need_an_admin_key(self):
        for action in ("reload_policy", "dead_letters", "replay", "watch"):
            p = self.curve_peer(self.any)
            body = p.call_broker(action, src="curve-user")
            self.assertEqual(bp.error_code(body), "denied", action)
        admin = self.curve_peer(self.admin)
        self.assertEqual(admin.call_broker("reload_policy", src="ops")["payload"]["status"], "ok")
        self.assertEqual(admin.call_broker("dead_letters", src="ops")["payload"]["status"], "ok")
        # reading the bus's health stays open
        p = self.curve_peer(self.any)
        self.assertEqual(p.call_broker("stats", src="curve-user")["type"], "response")

    def test_authorize_hook_sees_the_key(self):
        svc = self.curve_peer(self.any)
        svc.register("ledger")
        other = self.curve_peer(self.any)
        m = other.request("ledger", "refund", src="some-client")
        body = self.expectError(other, "denied", correlation_id=m["msg_id"])
        self.assertIn("only payment may refund", body["payload"]["message"])
        payer = self.curve_peer(self.pay)
        m = payer.request("ledger", "refund", src="payment-client")
        _, got = svc.recv()
        self.assertEqual(got["msg_id"], m["msg_id"])


class KeyFileTest(bp.BrokerTestCase):
    def run_cli(self, *args):
        return subprocess.run([bp.broker_path(), "--policy", "", "--services", "", "--endpoint",
                               "tcp://127.0.0.1:%d" % bp.free_port()] + list(args),
                              capture_output=True, text=True, timeout=10)

    def test_keygen_writes_safe_files_and_never_overwrites(self):
        with tempfile.TemporaryDirectory() as d:
            prefix = os.path.join(d, "svc")
            keygen(prefix)
            self.assertEqual(stat.S_IMODE(os.stat(prefix + ".key").st_mode), 0o600)
            self.assertEqual(len(read_key(prefix + ".pub")), 40)
            again = subprocess.run([bp.broker_path(), "--keygen", prefix], capture_output=True,
                                   text=True, timeout=5)
            self.assertEqual(again.returncode, 2)
            self.assertIn("exists already", again.stderr)

    def test_bad_key_files_are_clear_errors(self):
        with tempfile.TemporaryDirectory() as d:
            keygen(os.path.join(d, "b"))
            allow = os.path.join(d, "allow")
            open(allow, "w").close()
            out = self.run_cli("--curve-secret-key", os.path.join(d, "missing.key"), "--curve-allow", allow)
            self.assertEqual(out.returncode, 2)
            self.assertIn("missing.key", out.stderr)
            os.chmod(os.path.join(d, "b.key"), 0o644)
            out = self.run_cli("--curve-secret-key", os.path.join(d, "b.key"), "--curve-allow", allow)
            self.assertEqual(out.returncode, 2)
            self.assertIn("too open", out.stderr)
            bad = os.path.join(d, "bad.key")
            with open(bad, "w") as f:
                f.write("not a key\n")
            os.chmod(bad, 0o600)
            out = self.run_cli("--curve-secret-key", bad, "--curve-allow", allow)
            self.assertEqual(out.returncode, 2)
            self.assertIn("no CURVE key", out.stderr)
            os.chmod(os.path.join(d, "b.key"), 0o600)
            out = self.run_cli("--curve-secret-key", os.path.join(d, "b.key"))
            self.assertEqual(out.returncode, 2)
            self.assertIn("allow list", out.stderr)
            with open(allow, "w") as f:
                f.write("tooshort name\n")
            out = self.run_cli("--curve-secret-key", os.path.join(d, "b.key"), "--curve-allow", allow)
            self.assertEqual(out.returncode, 2)
            self.assertIn("allow:1", out.stderr)

    def test_plain_mode_on_a_public_address_warns(self):
        b = bp.Broker(endpoint="tcp://0.0.0.0:%d" % bp.free_port())
        try:
            self.assertIn("CURVE is off", b.log_text())
        finally:
            b.stop()
            b.cleanup()


class AclExampleTest(bp.BrokerTestCase):
    """policies/examples/acl.lua, as shipped."""
    BROKER_ARGS = ("--policy", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "..", "..", "policies", "examples", "acl.lua"))

    def test_rules_allow_and_deny_by_sender(self):
        ledger = self.peer(register="ledger")
        inventory = self.peer(register="inventory")
        payment = self.peer(register="payment-service")
        shop = self.peer(register="shop-frontend")
        m = payment.request("ledger", "refund", payload={"order": 1})
        self.assertEqual(ledger.recv()[1]["msg_id"], m["msg_id"])
        m = shop.request("ledger", "refund")
        body = self.expectError(shop, "denied", correlation_id=m["msg_id"])
        self.assertIn("shop-frontend may not call ledger refund", body["payload"]["message"])
        m = shop.request("ledger", "balance")              # "*": any sender
        self.assertEqual(ledger.recv()[1]["msg_id"], m["msg_id"])
        m = shop.request("inventory", "restock")
        self.expectError(shop, "denied", correlation_id=m["msg_id"])
        m = shop.request("inventory", "reserve")           # no rule for it: closed
        self.expectError(shop, "denied", correlation_id=m["msg_id"])
        m = shop.request("inventory", "stock")
        self.assertEqual(inventory.recv()[1]["msg_id"], m["msg_id"])

    def test_unlisted_services_are_open(self):
        other = self.peer(register="acl-open")
        shop = self.peer(register="acl-shop")
        m = shop.request("acl-open", "anything")
        self.assertEqual(other.recv()[1]["msg_id"], m["msg_id"])


if __name__ == "__main__":
    bp.main()
