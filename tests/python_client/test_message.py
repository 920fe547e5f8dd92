#!/usr/bin/python3
"""smartshop.message keeps the seed's build_message, dumps, loads, and the
seed's core.message still imports them (one copy of the code)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import bp  # noqa: E402

from smartshop import message  # noqa: E402
from smartshop.message import Message, build_message, dumps, loads  # noqa: E402


class MessageTest(unittest.TestCase):
    def test_build_message_has_the_seeds_fields_and_order(self):
        m = build_message("request", "a", "b", "do", payload={"k": 1}, correlation_id="c")
        self.assertEqual(list(m), ["msg_id", "type", "src", "dst", "action", "payload",
                                   "correlation_id", "timestamp"])
        self.assertRegex(m["msg_id"], bp.UUID_RE)
        self.assertRegex(m["timestamp"], bp.TIMESTAMP_RE)
        self.assertEqual((m["type"], m["src"], m["dst"], m["action"], m["payload"],
                          m["correlation_id"]), ("request", "a", "b", "do", {"k": 1}, "c"))
        self.assertNotEqual(build_message("event", "a", "b", "x")["msg_id"], m["msg_id"])
        d = build_message("register", "svc", "broker", "register")
        self.assertIsNone(d["payload"])
        self.assertIsNone(d["correlation_id"])

    def test_dumps_is_compact_utf8_and_loads_takes_bytes_str_memoryview(self):
        m = {"a": "ไทย", "b": [1, 2]}
        data = dumps(m)
        self.assertIsInstance(data, bytes)
        self.assertEqual(data, '{"a":"ไทย","b":[1,2]}'.encode("utf-8"))
        for form in (data, data.decode(), bytearray(data), memoryview(data)):
            self.assertEqual(loads(form), m)
        with self.assertRaises(ValueError):
            loads(b"{not json")

    def test_core_message_is_smartshop_message(self):
        import core.message  # examples/python, on sys.path through brokerproc
        self.assertIs(core.message.build_message, build_message)
        self.assertIs(core.message.dumps, dumps)
        self.assertIs(core.message.loads, loads)

    def test_core_message_imports_without_smartshop_installed(self):
        # a fresh interpreter with only examples/python on the path (the seed's layout)
        code = ("import sys; from core.message import build_message, dumps, loads; "
                "m = build_message('register', 's', 'broker', 'register'); "
                "assert loads(dumps(m)) == m; import smartshop.message as s; "
                "assert s.build_message is build_message; print('ok')")
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, PYTHONPATH=bp.EXAMPLES, PYTHONNOUSERSITE="1")
            out = subprocess.run([bp.PYTHON, "-c", code], cwd=d, env=env, capture_output=True,
                                 text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "ok")

    def test_message_reads_fields_as_attributes(self):
        m = Message(loads(dumps(build_message("request", "a", "b", "do", payload=[1]))))
        self.assertEqual((m.type, m.src, m.dst, m.action, m.payload), ("request", "a", "b", "do", [1]))
        self.assertIsNone(m.correlation_id)
        self.assertIsNone(m.ttl_ms)
        self.assertEqual(json.loads(json.dumps(m)), dict(m))
        self.assertEqual(message.now_iso()[-1], "Z")


if __name__ == "__main__":
    unittest.main(verbosity=2)
