#!/usr/bin/python3
"""The circuit breaker (smartshop.rules.breaker, docs/lua-library.md) end
to end: the real broker feeds on_outcome from requests settling (error
answers, timeouts, instances gone), and the breaker opens, answers from
its fallback or fails fast with `unavailable`, half-opens to probe, and
closes again, against a real failing service (a ZeroMQ peer). Also the
refusal codes a policy may give (bad_payload, unavailable) reach the
client as such."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

OPEN_MS = int(600 * bp.SLOW)

POLICY = """
local policy  = require "smartshop.policy"
local breaker = require "smartshop.rules.breaker"
local schema  = require "smartshop.rules.schema"
policy.use {
  breaker.new { service = "payments", failures = 3, window_ms = 60000, open_ms = %d,
                fallback = "payments-fallback", error_codes = { "internal" } },
  breaker.new { service = "ledger", failures = 2, window_ms = 60000, open_ms = %d },
  breaker.new { service = "stock", failures = 2, window_ms = 60000, open_ms = %d,
                fallback = "stock-fallback" },
  schema.new { service = "orders", actions = { create = {
    qty = { type = "integer", required = true, min = 1 } } } },
}
""" % (OPEN_MS, OPEN_MS, OPEN_MS)


class Breaker(bp.PolicyTestCase):
    POLICY = POLICY

    def logged(self, pattern):
        """The broker logs a line matching pattern (each change of state is logged)."""
        self.assertTrue(self.broker.wait_for_log(pattern, timeout=3 * bp.SLOW),
                        "not logged: %s\n%s" % (pattern, self.broker.log_text()))

    def service(self, name, identity):
        return self.peer(identity=identity, register=name)

    def serve_one(self, svc, answer="ok", code="internal"):
        """svc takes the next request and answers it: ok, an error, or not at all."""
        _, req = svc.recv(timeout=3 * bp.SLOW)
        if answer == "ok":
            svc.answer(req, payload={"by": svc.name})
        elif answer == "error":
            svc.answer(req, type="error", payload={"code": code, "message": "down"})
        return req

    def call(self, client, svc, answer="ok", code="internal", **extra):
        """A request to payments; `svc` (the instance it should reach) answers."""
        m = client.request("payments", "charge", {"amount": 1}, **extra)
        req = self.serve_one(svc, answer, code)
        self.assertEqual(req["msg_id"], m["msg_id"])
        return client.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)[1]

    def test_open_fallback_half_open_close(self):
        client = self.peer(register="shop-a")
        payments = self.service("payments", "payments-1")
        fallback = self.service("payments-fallback", "payments-fallback-1")
        # closed: answers from payments, ok or not
        self.assertEqual(self.call(client, payments)["payload"], {"by": "payments"})
        # a client's error code (not in error_codes) does not count
        self.assertEqual(bp.error_code(self.call(client, payments, "error", code="bad_request")),
                         "bad_request")
        self.assertEqual(bp.error_code(self.call(client, payments, "error")), "internal")
        # a timeout counts (ttl 200 ms, never answered)
        body = self.call(client, payments, answer="none", ttl_ms=int(200 * bp.SLOW))
        self.assertEqual(bp.error_code(body), "timeout")
        self.assertEqual(bp.error_code(self.call(client, payments, "error")), "internal")
        # three bad outcomes: open. The next requests go to the fallback
        self.logged(r"breaker payments: open \(3 bad outcomes")
        for _ in range(2):
            self.assertEqual(self.call(client, fallback)["payload"], {"by": "payments-fallback"})
        payments.expect_nothing(0.1)
        # after open_ms: one probe goes to payments; while it is out, the
        # others still go to the fallback; it fails: open again
        time.sleep(OPEN_MS / 1000 + 0.1)
        probe = client.request("payments", "charge", {"amount": 2})
        _, probe_req = payments.recv(timeout=3 * bp.SLOW)
        self.assertEqual(probe_req["msg_id"], probe["msg_id"])
        self.logged(r"breaker payments: half-open: one probe goes through")
        self.assertEqual(self.call(client, fallback)["payload"], {"by": "payments-fallback"})
        payments.answer(probe_req, type="error", payload={"code": "internal", "message": "still"})
        client.recv_answer(probe["msg_id"])
        self.logged(r"breaker payments: open \(the probe failed")
        self.assertEqual(self.call(client, fallback)["payload"], {"by": "payments-fallback"})
        # again after open_ms: the probe succeeds, the circuit closes
        time.sleep(OPEN_MS / 1000 + 0.1)
        self.assertEqual(self.call(client, payments)["payload"], {"by": "payments"})
        self.logged(r"breaker payments: closed")
        for _ in range(3):
            self.assertEqual(self.call(client, payments)["payload"], {"by": "payments"})
        fallback.expect_nothing(0.1)
        self.assertAlive()

    def test_fail_fast_unavailable_and_gone_counts(self):
        client = self.peer(register="shop-b")
        ledger = self.peer(identity="ledger-1", register="ledger")
        # an instance that goes away with a request in hand: service_gone, bad
        m = client.request("ledger", "post", {})
        ledger.recv(timeout=3 * bp.SLOW)
        ledger.close()
        self.expectError(client, "service_gone", correlation_id=m["msg_id"], timeout=3 * bp.SLOW)
        ledger2 = self.peer(identity="ledger-2", register="ledger")
        m = client.request("ledger", "post", {})
        _, req = ledger2.recv(timeout=3 * bp.SLOW)
        ledger2.answer(req, type="error", payload={"code": "internal", "message": "x"})
        client.recv_answer(m["msg_id"])
        # two bad outcomes: open, no fallback: refused at once, `unavailable`
        self.logged(r"breaker ledger: open")
        m = client.request("ledger", "post", {})
        body = self.expectError(client, "unavailable", correlation_id=m["msg_id"])
        self.assertIn("circuit open: ledger is failing", body["payload"]["message"])
        ledger2.expect_nothing(0.1)
        # half-open: the probe reaches ledger, an ok closes the circuit
        time.sleep(OPEN_MS / 1000 + 0.1)
        m = client.request("ledger", "post", {})
        _, req = ledger2.recv(timeout=3 * bp.SLOW)
        ledger2.answer(req, payload={"ok": True})
        self.assertEqual(client.recv_answer(m["msg_id"])[1]["type"], "response")
        self.logged(r"breaker ledger: closed")
        stats = client.call_broker("stats")["payload"]
        self.assertGreaterEqual(stats["errors"].get("unavailable", 0), 1, stats)

    def test_answers_to_requests_from_before_the_open_do_not_decide(self):
        client = self.peer(register="shop-d")
        stock = self.service("stock", "stock-1")
        fallback = self.service("stock-fallback", "stock-fallback-1")
        # two requests stuck at stock, then two failures open the circuit
        held = []
        for _ in range(2):
            m = client.request("stock", "count", {}, ttl_ms=int(20000 * bp.SLOW))
            _, req = stock.recv(timeout=3 * bp.SLOW)
            held.append((m, req))
        time.sleep(0.02)      # now_ms() counts whole ms: held well before the open
        for _ in range(2):
            m = client.request("stock", "count", {})
            _, req = stock.recv(timeout=3 * bp.SLOW)
            stock.answer(req, type="error", payload={"code": "internal", "message": "down"})
            client.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)
        self.logged(r"breaker stock: open \(2 bad outcomes")
        time.sleep(OPEN_MS / 1000 + 0.1)
        probe = client.request("stock", "count", {"probe": True})
        _, probe_req = stock.recv(timeout=3 * bp.SLOW)
        self.assertEqual(probe_req["msg_id"], probe["msg_id"])
        # an old request answered ok now: not the probe's outcome, still half-open
        m, req = held[0]
        stock.answer(req, payload={"late": True})
        client.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)    # settled: on_outcome heard it
        self.assertEqual(self.call_to(client, "stock", fallback)["payload"], {"by": "stock-fallback"},
                         "while the probe is out the others still go to the fallback")
        # the probe's ok closes it
        stock.answer(probe_req, payload={"ok": True})
        client.recv_answer(probe["msg_id"], timeout=3 * bp.SLOW)
        self.logged(r"breaker stock: closed")
        # the other old request fails now: stale, it does not count
        m, req = held[1]
        stock.answer(req, type="error", payload={"code": "internal", "message": "late"})
        client.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)
        self.assertEqual(self.call_to(client, "stock", stock, "error")["payload"]["code"], "internal")
        self.assertEqual(self.call_to(client, "stock", stock)["payload"], {"by": "stock"},
                         "one new failure after the close; the stale one did not count")
        fallback.expect_nothing(0.1)

    def call_to(self, client, dst, svc, answer="ok"):
        m = client.request(dst, "count", {})
        req = self.serve_one(svc, answer)
        self.assertEqual(req["msg_id"], m["msg_id"])
        return client.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)[1]

    def test_bad_payload_names_the_field(self):
        client = self.peer(register="shop-c")
        orders = self.peer(identity="orders-1", register="orders")
        m = client.request("orders", "create", {"qty": 0})
        body = self.expectError(client, "bad_payload", correlation_id=m["msg_id"])
        self.assertEqual(body["payload"]["message"], "orders create: field 'qty' must be at least 1")
        m = client.request("orders", "create", {"qty": 2})
        _, req = orders.recv()
        self.assertEqual(req["msg_id"], m["msg_id"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
