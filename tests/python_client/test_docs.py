#!/usr/bin/python3
"""docs/python-api.md's services run: the five-line one as it is written
there, and the fifty-line one, which must be examples/python/pricing_service.py
word for word; each is asked through the broker, then stopped with SIGTERM."""
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp  # noqa: E402

import smartshop  # noqa: E402

DOC = os.path.join(support.REPO_ROOT, "docs", "python-api.md")


def blocks():
    """{marker: code} for each ```python block after a <!-- test_docs: X --> line."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return dict(re.findall(r"<!-- test_docs: (.+?) -->\n```python\n(.*?)```", text, re.S))


class DocsTest(bp.BrokerTestCase):
    def run_service(self, path, name, env_extra=None):
        env = dict(bp.python_env(self.broker.endpoint), **(env_extra or {}))
        self.out = tempfile.TemporaryFile(mode="w+")
        self.addCleanup(self.out.close)
        proc = subprocess.Popen([bp.PYTHON, path], env=env, stdout=self.out,
                                stderr=subprocess.STDOUT, text=True, cwd=os.path.dirname(path))
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        client = smartshop.Client(self.broker.endpoint)
        self.addCleanup(client.close)
        self.assertTrue(support.wait_until(lambda: support.listed(client, name) == 1, 10))
        return proc, client

    def output(self):
        self.out.seek(0)
        return self.out.read()

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10 * SLOW)
        out = self.output()
        self.assertEqual(proc.returncode, 0, out)
        self.assertNotIn("Traceback", out)
        return out

    def test_the_five_line_service(self):
        code = blocks()["five-line service"]
        self.assertEqual(len(code.strip().splitlines()), 5)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "hello.py")
            with open(path, "w") as f:
                f.write(code)
            proc, client = self.run_service(path, "hello-service",
                                            {"PYTHONPATH": support.PYTHON_DIR})
            self.assertEqual(client.request("hello-service", "hello", "Somchai"),
                             {"greeting": "hello, Somchai"})
            with self.assertRaises(smartshop.UnknownActionError):
                client.request("hello-service", "bye")
            self.stop(proc)

    def test_the_fifty_line_service_is_the_example_and_runs(self):
        path = os.path.join(bp.EXAMPLES, "pricing_service.py")
        with open(path, encoding="utf-8") as f:
            self.assertEqual(blocks()["examples/python/pricing_service.py"], f.read())
        proc, client = self.run_service(path, "pricing")
        self.assertEqual(client.request("pricing", "price", {"sku": "A1"}), {"sku": "A1", "price": 2.5})
        self.assertEqual(client.request("pricing", "set_price", {"sku": "C3", "price": 4}),
                         {"sku": "C3", "price": 4})
        self.assertEqual(client.request("pricing", "price", {"sku": "C3"})["price"], 4)
        for payload, code in (({"sku": "Z9"}, "unknown_sku"), ("A1", "bad_request"),
                              ({"sku": "A1", "price": -1}, "bad_request")):
            with self.assertRaises(smartshop.RemoteError) as cm:
                client.request("pricing", "price" if code == "unknown_sku" or payload == "A1"
                               else "set_price", payload)
            self.assertEqual(cm.exception.code, code)
        client.register(support.unique("py-docs-alerter"))
        client.broadcast("low_stock", {"sku": "A1", "qty": 2})
        self.assertTrue(support.wait_until(lambda: "low stock: A1 (2 left)" in self.output(), 5),
                        self.output())
        self.stop(proc)


if __name__ == "__main__":
    bp.main()
