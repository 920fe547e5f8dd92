#!/usr/bin/python3
"""services/inventory.lua end to end (issue 4's "useful example"): stock,
reserve and restock requests; a timer that publishes a low_stock event when
a SKU drops below the threshold, priced by the "pricing" service when one
answers, and sent without a price when none does (absent, or too slow).
Rules of docs/protocol.md checked: T8, T5 (the low_stock broadcast), T3/D1
(its request to pricing, answered or timed out)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

INVENTORY = os.path.join(bp.SERVICES_DIR, "inventory.lua")
THRESHOLD = 5
CHECK = 0.5            # the file's CHECK_MS, in seconds
PRICING_TIMEOUT = 0.3  # its timeout_ms for the pricing request
ALERT_WAIT = CHECK + PRICING_TIMEOUT + 0.7


def with_alert_to(name):
    """inventory.lua's text with ALERT_TO set to `name`."""
    with open(INVENTORY) as f:
        text = f.read()
    line = 'local ALERT_TO = "broadcast"'
    assert line in text, "inventory.lua no longer has the line %r" % line
    return text.replace(line, 'local ALERT_TO = "%s"' % name)


class InventoryCase(bp.LuaServicesTestCase):
    SOURCE = None  # the file's text, if not inventory.lua as shipped

    @classmethod
    def make_services_dir(cls):
        if cls.SOURCE is None:
            return bp.services_dir({"inventory.lua": INVENTORY})
        d = bp.services_dir({})
        with open(os.path.join(d, "inventory.lua"), "w") as f:
            f.write(cls.SOURCE)
        return d

    def setUp(self):
        super().setUp()
        self.client = self.peer(name="shop-client")
        # no "pricing" from an earlier test may be left
        self.assertTrue(bp.wait_until(lambda: "pricing" not in bp.services(self.client), 3.0))

    def ask(self, action, payload=None):
        m = self.client.request("inventory", action, payload=payload)
        return self.client.recv_answer(m["msg_id"])[1]

    def ok(self, action, payload=None):
        body = self.ask(action, payload)
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["src"], "inventory")
        return body["payload"]

    def failed(self, action, payload, code):
        body = self.ask(action, payload)
        self.assertEqual(body["type"], "error", bp.dump(body))
        self.assertEqual(body["src"], "inventory")
        self.assertEqual(bp.error_code(body), code, bp.dump(body))
        return body["payload"]["message"]

    def low_stock(self, watcher, sku, timeout=ALERT_WAIT):
        """The low_stock event for `sku` that `watcher` gets."""
        _, body, _ = watcher.recv_until(
            lambda b: b.get("action") == "low_stock" and (b.get("payload") or {}).get("sku") == sku,
            timeout)
        self.assertEqual(body["type"], "event")
        self.assertEqual(body["src"], "inventory")
        return body

    def no_low_stock(self, watcher, sku, seconds):
        deadline = time.monotonic() + seconds
        while True:
            frames = watcher.recv_raw(max(0, deadline - time.monotonic()))
            if frames is None:
                return
            body = bp.loads(frames[-1])
            if body.get("action") == "low_stock" and body["payload"].get("sku") == sku:
                self.fail("unexpected low_stock: %s" % bp.dump(body))


class InventoryTest(InventoryCase):
    def test_restock_reserve_and_stock(self):
        self.assertEqual(self.ok("stock", {"sku": "S1"}), {"sku": "S1", "qty": 0})
        self.assertEqual(self.ok("restock", {"sku": "S1", "qty": 10}), {"sku": "S1", "qty": 10})
        self.assertEqual(self.ok("restock", {"sku": "S1", "qty": 2}), {"sku": "S1", "qty": 12})
        self.assertEqual(self.ok("reserve", {"sku": "S1", "qty": 3}), {"sku": "S1", "qty": 9})
        self.assertEqual(self.ok("stock", {"sku": "S1"}), {"sku": "S1", "qty": 9})
        self.assertEqual(self.ok("stock").get("S1"), 9)  # no sku: every count
        self.assertIn("only 9 on hand", self.failed("reserve", {"sku": "S1", "qty": 10},
                                                    "insufficient_stock"))
        self.assertEqual(self.ok("stock", {"sku": "S1"})["qty"], 9)  # a refusal changes nothing

    def test_bad_requests(self):
        for payload in (None, "S1", {"sku": "S1"}, {"qty": 1}, {"sku": 5, "qty": 1},
                        {"sku": "S1", "qty": 0}, {"sku": "S1", "qty": -2},
                        {"sku": "S1", "qty": 1.5}):
            for action in ("reserve", "restock"):
                self.failed(action, payload, "bad_request")
        self.failed("sell", {"sku": "S1", "qty": 1}, "unknown_action")

    def test_reserve_below_the_threshold_publishes_low_stock_without_pricing(self):
        watcher = self.peer(register="stock-watch")
        mark = len(self.broker.log_text())
        self.ok("restock", {"sku": "L1", "qty": 10})
        self.ok("reserve", {"sku": "L1", "qty": 5})    # 5 left: not below 5
        self.no_low_stock(watcher, "L1", CHECK + 0.2)
        start = time.monotonic()
        self.ok("reserve", {"sku": "L1", "qty": 2})    # 3 left: low
        body = self.low_stock(watcher, "L1")
        self.assertLess(time.monotonic() - start, CHECK + 0.4)  # no pricing: no wait for it
        self.assertEqual(body["dst"], "broadcast")
        self.assertEqual(body["payload"], {"sku": "L1", "qty": 3, "threshold": THRESHOLD})
        self.assertTrue(self.broker.wait_for_log(r"no price for L1: no_such_service", start=mark))
        # once, not on every tick
        self.ok("reserve", {"sku": "L1", "qty": 1})
        self.no_low_stock(watcher, "L1", CHECK + 0.3)
        # a restock re-arms it
        self.ok("restock", {"sku": "L1", "qty": 1})
        self.ok("reserve", {"sku": "L1", "qty": 1})
        self.assertEqual(self.low_stock(watcher, "L1")["payload"]["qty"], 2)

    def test_low_stock_carries_the_price_from_pricing(self):
        watcher = self.peer(register="stock-watch")
        pricing = self.peer(register="pricing")
        self.ok("restock", {"sku": "P1", "qty": 6})
        self.ok("reserve", {"sku": "P1", "qty": 2})
        _, req = pricing.recv(timeout=CHECK + 0.5)
        self.assertEqual(req["type"], "request")
        self.assertEqual(req["src"], "inventory")
        self.assertEqual(req["action"], "price")
        self.assertEqual(req["payload"], {"sku": "P1"})
        self.assertEqual(req["ttl_ms"], int(PRICING_TIMEOUT * 1000))
        pricing.answer(req, payload={"price": 2.5})
        body = self.low_stock(watcher, "P1")
        self.assertEqual(body["payload"], {"sku": "P1", "qty": 4, "threshold": THRESHOLD,
                                           "unit_price": 2.5})
        pricing.close()

    def test_a_slow_pricing_times_out_and_the_alert_goes_out_anyway(self):
        watcher = self.peer(register="stock-watch")
        pricing = self.peer(register="pricing")
        mark = len(self.broker.log_text())
        self.ok("restock", {"sku": "T1", "qty": 4})
        _, req = pricing.recv(timeout=CHECK + 0.5)
        asked = time.monotonic()
        body = self.low_stock(watcher, "T1")
        self.assertGreaterEqual(time.monotonic() - asked, PRICING_TIMEOUT - 0.1)
        self.assertNotIn("unit_price", body["payload"])
        self.assertTrue(self.broker.wait_for_log(r"no price for T1: timeout", start=mark))
        pricing.answer(req, payload={"price": 1})  # too late
        # (pricing, a registered peer, got the low_stock broadcast too)
        _, err, _ = pricing.recv_until(lambda b: b.get("type") == "error")
        self.assertEqual(bp.error_code(err), "unknown_request")
        pricing.close()

    def test_a_pricing_error_is_handled(self):
        watcher = self.peer(register="stock-watch")
        pricing = self.peer(register="pricing")
        mark = len(self.broker.log_text())
        self.ok("restock", {"sku": "E1", "qty": 1})
        _, req = pricing.recv(timeout=CHECK + 0.5)
        pricing.answer(req, type="error", payload={"code": "unknown_sku", "message": "E1?"})
        body = self.low_stock(watcher, "E1")
        self.assertEqual(body["payload"], {"sku": "E1", "qty": 1, "threshold": THRESHOLD})
        self.assertTrue(self.broker.wait_for_log(r"no price for E1: unknown_sku", start=mark))
        pricing.close()

    def test_the_broker_log_has_no_service_failure(self):
        self.ok("stock")
        self.assertNotRegex(self.broker.log_text(), r"failed: |not loaded|refused")


class InventoryDocTest(bp.BrokerTestCase):
    @classmethod
    def setUpClass(cls):
        pass  # no broker needed

    @classmethod
    def tearDownClass(cls):
        pass

    def test_the_docs_show_the_file_as_shipped(self):
        with open(INVENTORY) as f:
            text = f.read()
        with open(os.path.join(bp.REPO_ROOT, "docs", "lua-services.md")) as f:
            doc = f.read()
        self.assertIn("```lua\n" + text + "```", doc,
                      "docs/lua-services.md's copy of services/inventory.lua is out of date")


class InventoryToANamedServiceTest(InventoryCase):
    """ALERT_TO set to a service name: the event goes to it, not to everyone."""

    SOURCE = with_alert_to("purchasing")

    def test_low_stock_goes_to_the_named_service(self):
        purchasing = self.peer(register="purchasing")
        bystander = self.peer(register="bystander")
        self.ok("restock", {"sku": "N1", "qty": 2})
        body = self.low_stock(purchasing, "N1")
        self.assertEqual(body["dst"], "purchasing")
        self.assertEqual(body["payload"]["qty"], 2)
        bystander.expect_nothing(0.2)


if __name__ == "__main__":
    bp.main()
