#!/usr/bin/python3
"""smartshop with the bus's other peers: libsmartshop's C examples
(build/examples/echo_service and test_client, as tests/client/run_c_examples.sh
runs them) and hosted Lua services (services/echo.lua, services/inventory.lua
asking a Python "pricing" service and broadcasting to Python, a failing
Lua handler)."""
import os
import subprocess
import sys
import threading
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp  # noqa: E402

import smartshop  # noqa: E402
from smartshop import errors  # noqa: E402

C_EXAMPLES = os.path.join(os.path.dirname(bp.broker_path()), "examples")


class CServiceTest(support.BusTestCase):
    def setUp(self):
        super().setUp()
        for prog in ("echo_service", "test_client"):
            if not os.access(os.path.join(C_EXAMPLES, prog), os.X_OK):
                self.fail("C example %s not built in %s" % (prog, C_EXAMPLES))
        watcher = self.client()           # the other test's echo-service must be gone
        self.assertTrue(support.wait_until(lambda: support.listed(watcher, "echo-service") == 0, 5))

    def test_python_client_asks_the_c_echo_service(self):
        proc = subprocess.Popen([os.path.join(C_EXAMPLES, "echo_service"), self.broker.endpoint],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._closers.append(lambda: (proc.terminate(), proc.wait(10)))
        c = self.client(name="py-c-client")
        self.assertTrue(support.wait_until(lambda: support.listed(c, "echo-service") == 1, 10))
        payload = {"hello": "ไทย", "n": [1, 2.5, None, True], "deep": {"a": {"b": "c"}}}
        self.assertEqual(c.request("echo-service", "echo", payload), payload)
        futs = [c.request_async("echo-service", "echo", i) for i in range(200)]
        self.assertEqual([f.result(20 * SLOW) for f in futs], list(range(200)))
        with self.assertRaises(errors.UnknownActionError):  # broker's service, next to C
            c.call_broker("no_such_action")

    def test_c_client_asks_a_python_service(self):
        seen = []
        self.service("echo-service", {None: lambda req: seen.append(req.src) or req.payload})
        out = subprocess.run([os.path.join(C_EXAMPLES, "test_client"), self.broker.endpoint],
                             capture_output=True, text=True, timeout=20 * SLOW)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn('"hello":"world"', out.stdout)
        self.assertEqual(len(seen), 1)


class LuaServiceTest(support.BusTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = bp.services_dir({
            "echo.lua": os.path.join(bp.SERVICES_DIR, "echo.lua"),
            "inventory.lua": os.path.join(bp.SERVICES_DIR, "inventory.lua"),
            "faulty.lua": os.path.join(bp.LUA_FIXTURES, "faulty.lua"),
        })
        cls.broker = bp.Broker(args=("--policy", "", "--services", cls.dir), core_only=False)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_python_asks_lua_echo(self):
        c = self.client()
        payload = {"text": "สวัสดี", "list": [1, {"x": None}]}
        self.assertEqual(c.request("echo-service", "echo", payload), payload)
        futs = [c.request_async("echo-service", "echo", {"i": i}) for i in range(300)]
        self.assertEqual([f.result(20 * SLOW) for f in futs], [{"i": i} for i in range(300)])

    def test_lua_inventory_asks_python_pricing_and_broadcasts_to_python(self):
        sku = "py-" + uuid.uuid4().hex[:8]
        alerts = []
        got = threading.Event()
        pricing = smartshop.Service("pricing", self.broker.endpoint)

        @pricing.handler("price")
        def price(req):
            return {"price": 2.5 if req.payload.get("sku") == sku else 1}

        @pricing.on_event("low_stock")
        def low(ev):
            if ev.payload.get("sku") == sku:
                alerts.append(ev)
                got.set()

        st = support.ServiceThread(pricing)
        self._closers.append(st.stop)
        st.wait_ready()
        c = self.client()
        self.assertEqual(c.request("inventory", "restock", {"sku": sku, "qty": 3}),
                         {"sku": sku, "qty": 3})
        with self.assertRaises(smartshop.RemoteError) as cm:
            c.request("inventory", "reserve", {"sku": sku, "qty": 10})
        self.assertEqual((cm.exception.code, cm.exception.src), ("insufficient_stock", "inventory"))
        self.assertIs(type(cm.exception), smartshop.RemoteError)
        self.assertTrue(got.wait(10 * SLOW), "no low_stock broadcast from inventory.lua")
        ev = alerts[0]
        self.assertEqual((ev.src, ev.type, ev.dst), ("inventory", "event", "broadcast"))
        self.assertEqual(ev.payload["unit_price"], 2.5)   # the Python service's answer, in Lua's event
        self.assertEqual(ev.payload["qty"], 3)

    def test_a_failing_lua_handler_is_a_service_error(self):
        c = self.client()
        with self.assertRaises(errors.ServiceError) as cm:
            c.request("lua-faulty", "raise")
        self.assertEqual(cm.exception.src, "lua-faulty")
        self.assertEqual(c.request("lua-faulty", "ok", 1)["ok"], True)
        with self.assertRaises(smartshop.RemoteError) as cm:
            c.request("lua-faulty", "fail_code")
        self.assertEqual(cm.exception.code, "not_found")


if __name__ == "__main__":
    unittest.main(verbosity=2)
