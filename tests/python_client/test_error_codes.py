#!/usr/bin/python3
"""Every error code of docs/protocol.md section 13 has its exception class,
and the real broker's errors reach the caller as those classes: the codes a
client can meet are provoked one by one; the rest (a library that builds
valid envelopes never causes them) are checked through error_from_reply."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp, unique  # noqa: E402

import smartshop  # noqa: E402
from smartshop import errors  # noqa: E402

PROTOCOL = os.path.join(support.REPO_ROOT, "docs", "protocol.md")


def protocol_codes():
    """The codes in protocol.md's error table (section 13)."""
    with open(PROTOCOL, encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("## 13. Error codes"):text.index("## 14.")]
    return re.findall(r"^\| ([a-z_]+) \|", table, re.M)


class MappingTest(bp.BrokerTestCase):
    def test_every_protocol_code_has_its_class(self):
        codes = protocol_codes()
        self.assertGreaterEqual(len(codes), 24, codes)
        self.assertEqual(set(codes) - {"code"}, set(errors.ERROR_CLASSES))
        for code in codes:
            if code == "code":
                continue
            reply = bp.msg("error", "broker", "me", "x", payload={"code": code, "message": "why"},
                           correlation_id="id-1")
            exc = errors.error_from_reply(reply)
            self.assertIs(type(exc), errors.ERROR_CLASSES[code])
            self.assertEqual((exc.code, exc.message, exc.reply, exc.src), (code, "why", reply, "broker"))
            self.assertIsInstance(exc, errors.RemoteError)
            self.assertIsInstance(exc, smartshop.SmartshopError)
            self.assertIs(type(errors.error_for(code)), type(exc))

    def test_codes_of_a_services_own_and_broken_replies(self):
        exc = errors.error_from_reply({"src": "inv", "payload": {"code": "out_of_stock", "message": "m"}})
        self.assertIs(type(exc), errors.RemoteError)
        self.assertEqual((exc.code, exc.src), ("out_of_stock", "inv"))
        for payload in (None, "x", {"code": 5}, {}):
            exc = errors.error_from_reply({"payload": payload})
            self.assertEqual(exc.code, "error")
        self.assertEqual(errors.StoppedError().code, "stopped")
        self.assertEqual(errors.UnreachableError().code, "unreachable")


class PlainBrokerErrorsTest(support.BusTestCase):
    def expect(self, cls, fn, *args, **kw):
        with self.assertRaises(cls) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code, cls.code)
        self.assertIsNotNone(cm.exception.reply, "expected the broker's reply, got a local error")
        return cm.exception

    def test_routing_and_name_errors(self):
        c = self.client()
        e = self.expect(errors.NoSuchServiceError, c.request, unique("py-nobody"), "x")
        self.assertEqual(e.src, "broker")
        self.expect(errors.BadNameError, c.request, "not a name!", "x")
        self.expect(errors.ReservedNameError, c.register, "broker.mine")
        self.expect(errors.ReservedNameError, c.request, "smartshop.x", "x")
        self.expect(errors.NotRegisteredError, c.unregister, unique("py-never"))
        self.expect(errors.UnknownActionError, c.call_broker, "no_such_action")
        self.assertEqual(c.names, [])

    def test_spoofed_src(self):
        held = unique("py-held")
        self.client().register(held)
        c = self.client()
        c.set_name(held)
        self.expect(errors.SpoofedSrcError, c.call_broker, "ping")

    def test_service_gone(self):
        name = unique("py-gone")
        svc = self.peer(register=name)
        c = self.client()
        f = c.request_async(name, "x", timeout=10 * SLOW)
        svc.recv_until(lambda b: b.get("type") == "request")
        svc.close()
        with self.assertRaises(errors.ServiceGoneError) as cm:
            f.result(10 * SLOW)
        self.assertEqual(cm.exception.src, "broker")

    def test_handler_codes_service_error_and_unknown_action(self):
        name = unique("py-codes")

        def crash(req):
            raise KeyError("secret payload detail")

        def own(req):
            raise smartshop.RemoteError("out_of_stock", "no apples left")

        def nested(req):
            raise errors.BusyError("try later")

        self.service(name, {"crash": crash, "own": own, "nested": nested,
                            "not_json": lambda req: {1, 2}})
        c = self.client()
        with self.assertLogs("smartshop", "ERROR"):
            e = self.expect(errors.ServiceError, c.request, name, "crash")
        self.assertEqual(e.src, name)
        self.assertNotIn("secret", e.message)
        with self.assertRaises(smartshop.RemoteError) as cm:
            c.request(name, "own")
        e = cm.exception
        self.assertEqual((type(e), e.code, e.message, e.src),
                         (smartshop.RemoteError, "out_of_stock", "no apples left", name))
        self.expect(errors.BusyError, c.request, name, "nested")
        with self.assertLogs("smartshop", "ERROR"):
            self.expect(errors.ServiceError, c.request, name, "not_json")
        e = self.expect(errors.UnknownActionError, c.request, name, "nope")
        self.assertEqual(e.src, name)

    def test_a_late_answer_gets_unknown_request_and_the_service_goes_on(self):
        name = unique("py-late")
        self.service(name, {"slow": lambda req: time.sleep(0.5) or "late",
                            "fast": lambda req: "fast"})
        c = self.client()
        with self.assertRaises(errors.RequestTimeout) as cm:
            c.request(name, "slow", timeout=2 * SLOW, ttl_ms=100)
        self.assertEqual(cm.exception.src, "broker")
        self.assertEqual(c.request(name, "fast"), "fast")    # after the slow one: served in order
        # the late answer went out and was refused
        self.assertTrue(support.wait_until(
            lambda: c.call_broker("stats")["errors"].get("unknown_request", 0) >= 1, 5))
        self.assertEqual(c.request(name, "fast"), "fast")

    def test_too_large_and_not_utf8_payloads(self):
        name = unique("py-big")
        self.service(name, {"echo": lambda req: req.payload})
        c = self.client()
        # the broker cannot read a msg_id in a frame it did not read (E2): no
        # correlation, so the caller times out and the refusal is logged
        with self.assertLogs("smartshop", "WARNING") as logs:
            with self.assertRaises(errors.RequestTimeout) as cm:
                c.request(name, "echo", "x" * (1 << 20), timeout=3.0 * SLOW)
        self.assertIsNone(cm.exception.reply)
        self.assertIn("too_large", "\n".join(logs.output))
        with self.assertRaises(ValueError):        # a lone surrogate is not UTF-8: refused here
            c.request(name, "echo", "\ud800")
        self.assertEqual(c.request(name, "echo", "ok"), "ok")


class ShuttingDownTest(support.BusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker = None

    def test_shutting_down(self):
        b = bp.Broker()
        try:
            name = unique("py-sd")
            svc = b.peer()
            svc.register(name)
            c = smartshop.Client(b.endpoint)
            try:
                f = c.request_async(name, "x", timeout=20 * SLOW)
                svc.recv_until(lambda m: m.get("type") == "request")
                b.send_signal(signal.SIGTERM)
                with self.assertRaises(errors.ShuttingDownError) as cm:
                    f.result(20 * SLOW)            # in flight at the end of the grace period
                self.assertEqual(cm.exception.src, "broker")
            finally:
                c.close(linger=0)
                svc.close()
            self.assertEqual(b.wait(10 * SLOW), 0)
        finally:
            b.cleanup()


class LimitTest(support.BusTestCase):
    BROKER_ARGS = ("--max-names-per-peer", "1")

    def test_limit_exceeded(self):
        c = self.client()
        c.register(unique("py-one"))
        with self.assertRaises(errors.LimitExceededError):
            c.register(unique("py-two"))
        self.assertEqual(len(c.names), 1)


POLICY = """
function on_register(name, peer)
  if name:sub(1, 8) == "py-deny-" then return false, "not here" end
  if name:sub(1, 8) == "py-fail-" then error("policy bug on purpose") end
end
"""


class PolicyErrorsTest(support.BusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp, path = bp.policy_dir(POLICY)
        cls.BROKER_ARGS = ("--policy", path)
        cls.broker = bp.Broker(args=cls.BROKER_ARGS, core_only=False)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_denied_and_policy_error(self):
        c = self.client()
        with self.assertRaises(errors.DeniedError):
            c.register("py-deny-x")
        with self.assertRaises(errors.PolicyError):
            c.register("py-fail-x")
        c.register("py-fine-x")
        self.assertEqual(c.names, ["py-fine-x"])


if __name__ == "__main__":
    bp.main()
