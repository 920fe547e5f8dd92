#!/usr/bin/python3
"""Topics end to end (docs/protocol.md section 8a): smartshop-ctl's pub
and sub against the real broker, subscriptions refused by a policy's
authorize hook, and the bounds on subscriptions."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def ctl_path():
    return os.path.join(os.path.dirname(bp.broker_path()), "smartshop-ctl")


class CtlTopicsTest(bp.BrokerTestCase):

    def ctl(self, *args, timeout=10):
        return subprocess.run([ctl_path(), "-e", self.broker.endpoint] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def test_pub_reaches_a_subscriber(self):
        sub = self.peer(name="audit")
        body = sub.call_broker("subscribe", {"topic": "order.*"}, src="audit")
        self.assertEqual(body["payload"]["status"], "ok")
        out = self.ctl("pub", "order.created", "created", '{"id": 7}')
        self.assertEqual(out.returncode, 0, out.stderr)
        _, ev = sub.recv()
        self.assertEqual((ev["topic"], ev["action"], ev["payload"]), ("order.created", "created", {"id": 7}))

    def test_pub_refuses_a_wildcard_topic(self):
        out = self.ctl("pub", "order.*", "created")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("topic", out.stderr)

    def test_sub_prints_matching_events_live(self):
        proc = subprocess.Popen([ctl_path(), "-e", self.broker.endpoint, "--json", "sub", "store.12.>"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            pub = self.peer(name="till")
            got = None
            deadline = time.monotonic() + 10 * bp.SLOW
            # publish until the subscription is in place and the line comes
            os.set_blocking(proc.stdout.fileno(), False)
            buf = ""
            while time.monotonic() < deadline and got is None:
                pub.send(bp.msg("event", "till", None, "sale", {"n": 1}, topic="store.12.till.3"))
                pub.send(bp.msg("event", "till", None, "sale", {"n": 2}, topic="store.13.till.1"))
                time.sleep(0.2)
                try:
                    buf += os.read(proc.stdout.fileno(), 65536).decode()
                except BlockingIOError:
                    pass
                for line in buf.splitlines():
                    if '"store.' in line:
                        got = bp.loads(line.encode())
                        break
            self.assertIsNotNone(got, "no event printed")
            self.assertEqual(got["topic"], "store.12.till.3")
            self.assertNotIn("store.13", buf)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=5)
        self.assertEqual(proc.returncode, 0, proc.stderr.read())

    def test_sub_with_a_bad_pattern_fails_at_once(self):
        out = self.ctl("sub", "order.a*")
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("bad_topic", out.stderr + out.stdout)


class TopicMetricsTest(bp.BrokerTestCase):

    def test_metrics_by_prefix_are_bounded(self):
        sub = self.peer(name="m-sub")
        self.assertEqual(sub.call_broker("subscribe", {"topic": "order.*"}, src="m-sub")["payload"]["status"], "ok")
        pub = self.peer(name="m-pub")
        for i in range(3):
            pub.send(bp.msg("event", "m-pub", None, "x", topic="order.created"))
        for i in range(100):                        # 100 prefixes nobody listens to
            pub.send(bp.msg("event", "m-pub", None, "x", topic="p%d.x" % i))
        for _ in range(3):
            sub.recv()
        def topics():
            return {t["prefix"]: t for t in pub.call_broker("metrics", src="m-pub")["payload"]["topics"]}
        self.assertTrue(bp.wait_until(lambda: sum(t["events"] for t in topics().values()) == 103,
                                      timeout=5 * bp.SLOW))
        t = topics()
        self.assertLessEqual(len(t), 65)
        self.assertEqual((t["order"]["events"], t["order"]["deliveries"], t["order"]["unmatched"]), (3, 3, 0))
        self.assertEqual(t["(other)"]["unmatched"], t["(other)"]["events"])


class TopicPolicyTest(bp.PolicyTestCase):
    POLICY = '''
function authorize(msg, peer)
  if msg.dst == "broker" and msg.action == "subscribe" then
    local p = msg.payload
    if p and type(p.topic) == "string" and p.topic:sub(1, 8) == "payment." then
      return false, "payment topics are for the payment team"
    end
  end
  if msg.topic == "secret.x" then
    return false, "nobody publishes secret.x"
  end
end
'''

    def test_authorize_refuses_a_subscription_and_a_publish(self):
        p = self.peer(name="curious")
        body = p.call_broker("subscribe", {"topic": "payment.>"}, src="curious")
        self.assertError(body, "denied")
        body = p.call_broker("subscribe", {"topic": "order.>"}, src="curious")
        self.assertEqual(body["payload"]["status"], "ok")
        m = p.send(bp.msg("event", "curious", None, "x", topic="secret.x"))
        self.expectError(p, "denied", correlation_id=m["msg_id"])


class SubscriptionBoundsTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--max-subscriptions-per-peer", "3", "--max-subscriptions", "5")

    def test_limits_per_connection_and_in_total(self):
        a = self.peer(name="a")
        for i in range(3):
            self.assertEqual(a.call_broker("subscribe", {"topic": "t.%d" % i}, src="a")["payload"]["status"], "ok")
        body = a.call_broker("subscribe", {"topic": "t.9"}, src="a")["payload"]
        self.assertEqual((body["status"], body["code"]), ("error", "limit_exceeded"))
        b = self.peer(name="b")
        for i in range(2):
            self.assertEqual(b.call_broker("subscribe", {"topic": "u.%d" % i}, src="b")["payload"]["status"], "ok")
        body = b.call_broker("subscribe", {"topic": "u.9"}, src="b")["payload"]
        self.assertEqual((body["status"], body["code"]), ("error", "limit_exceeded"))
        self.assertIn("--max-subscriptions", body["message"])
        a.close()
        # a's subscriptions went with it: room again
        self.assertTrue(bp.wait_until(
            lambda: b.call_broker("subscribe", {"topic": "u.9"}, src="b")["payload"]["status"] == "ok",
            timeout=5 * bp.SLOW))


keygen = bp.keygen


class CurveTopicsTest(bp.BrokerTestCase):
    """The allow list's topic: entries bound what a key publishes and
    subscribes to; a key without any may use every topic."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.broker_pub, _ = keygen(os.path.join(d, "broker"))
        cls.shop = keygen(os.path.join(d, "shop"))
        cls.free = keygen(os.path.join(d, "free"))
        with open(os.path.join(d, "allow"), "w") as f:
            f.write("%s shop topic:order.> topic:store.*.till\n%s *\n" % (cls.shop[0], cls.free[0]))
        cls.BROKER_ARGS = ("--curve-secret-key", os.path.join(d, "broker.key"),
                           "--curve-allow", os.path.join(d, "allow"))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.tmp.cleanup()

    def test_topic_entries_bound_subscribe_and_publish(self):
        shop = self.curve_peer(self.shop)
        for pattern, ok in (("order.created", True), ("order.*", True), ("order.>", True),
                            ("store.12.till", True), ("store.*.till", True), (">", False),
                            ("store.>", False), ("payment.*", False)):
            body = shop.call_broker("subscribe", {"topic": pattern}, src="shop")["payload"]
            self.assertEqual(body["status"] == "ok", ok, (pattern, body))
            if not ok:
                self.assertEqual(body["code"], "denied")
        free = self.curve_peer(self.free)
        self.assertEqual(free.call_broker("subscribe", {"topic": ">"}, src="free")["payload"]["status"], "ok")
        m = shop.send(bp.msg("event", "shop", None, "x", topic="payment.refund"))
        self.expectError(shop, "denied", correlation_id=m["msg_id"])
        shop.send(bp.msg("event", "shop", None, "x", topic="order.created"))
        _, ev = free.recv()
        self.assertEqual(ev["topic"], "order.created")

    def test_a_bad_topic_entry_stops_the_start(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            keygen(os.path.join(d, "broker"))
            k = keygen(os.path.join(d, "k"))
            with open(os.path.join(d, "allow"), "w") as f:
                f.write("%s topic:order.a*\n" % k[0])
            out = bp.run_broker_cli(["--curve-secret-key", os.path.join(d, "broker.key"),
                                     "--curve-allow", os.path.join(d, "allow"),
                                     "--endpoint", "tcp://127.0.0.1:%d" % bp.free_port()])
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertIn("not a topic pattern", out.stderr)


if __name__ == "__main__":
    bp.main()
