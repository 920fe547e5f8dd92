#!/usr/bin/python3
"""Lua services as seen from the wire (issue 4, docs/lua-services.md): the
seed's test client gets its answer from services/echo.lua with only the
broker running; Lua services show in list_services like remote ones; an
answer that returns msg.payload forwards the request's very bytes.
Rules of docs/protocol.md checked: T8, T1 (it registers), B1
(list_services), E5 (bytes forwarded untouched), F2 (REQ-style peers)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

CLIENT = os.path.join(bp.EXAMPLES, "test_client.py")


def run_client(endpoint, *args):
    return subprocess.run([bp.PYTHON, CLIENT, "--endpoint", endpoint, "--timeout", "3"]
                          + list(args), capture_output=True, text=True, timeout=10,
                          env=bp.python_env(endpoint))


class ShippedServicesTest(bp.BrokerTestCase):
    """The broker as a user starts it: no flag but the endpoint, so the
    default policy and the repository's services/ directory."""

    @classmethod
    def setUpClass(cls):
        cls.broker = bp.Broker(core_only=False)

    def test_seed_test_client_gets_the_echo_with_only_the_broker_running(self):
        res = run_client(self.broker.endpoint)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        answer = json.loads(res.stdout.strip().splitlines()[-1])
        self.assertEqual(answer["type"], "response")
        self.assertEqual(answer["src"], "echo-service")
        self.assertEqual(answer["dst"], "test-client")
        self.assertEqual(answer["action"], "echo")
        self.assertEqual(answer["payload"], {"hello": "world"})
        self.assertRegex(answer["msg_id"], bp.UUID_RE)
        self.assertRegex(answer["timestamp"], bp.TIMESTAMP_RE)

    def test_every_shipped_service_loads_cleanly(self):
        names = bp.services(self.peer())
        self.assertEqual(names.get("echo-service"), 1, names)
        self.assertEqual(names.get("inventory"), 1, names)
        files = sorted(f for f in os.listdir(bp.SERVICES_DIR) if f.endswith(".lua"))
        log = self.broker.log_text()
        for f in files:
            self.assertRegex(log, r"service \S+ loaded from %s" % f.replace(".", r"\."))
        self.assertNotIn("not loaded", log)
        self.assertNotIn("refused", log)
        self.assertRegex(log, r"%d Lua service\(s\) loaded from services" % len(files))


class EchoTest(bp.LuaServicesTestCase):
    SERVICE_FILES = {"echo.lua": os.path.join(bp.SERVICES_DIR, "echo.lua"),
                     "shared.lua": os.path.join(bp.LUA_FIXTURES, "shared.lua")}

    def test_seed_test_client_gets_the_echo(self):
        res = run_client(self.broker.endpoint, "--payload", '{"n": [1, 2, 3], "s": "h\\u00e9"}')
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        answer = json.loads(res.stdout.strip().splitlines()[-1])
        self.assertEqual(answer["payload"], {"n": [1, 2, 3], "s": "h\u00e9"})
        self.assertEqual(answer["src"], "echo-service")

    def test_list_services_shows_lua_services_as_one_instance_each(self):
        names = bp.services(self.peer())
        self.assertEqual(names, {"echo-service": 1, "shared-svc": 1})

    def test_echo_forwards_the_payload_bytes_unchanged(self):
        # returning msg.payload untouched sends the request's own bytes
        p = self.peer()
        payload = '{"b" : 1,  "a":[1.50, "\\u00e9", null],"b2":{}}'
        raw = ('{"msg_id":"%s","type":"request","src":"raw-client","dst":"echo-service",'
               '"action":"echo","payload":%s}' % (bp.new_id(), payload))
        p.send(raw)
        frames, body = p.recv()
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertIn(b'"payload":' + payload.encode(), frames[-1])

    def test_echo_of_scalars_and_null(self):
        p = self.peer()
        for value in ["text", 42, 1.5, True, False, None, [], {"k": None}, [1, [2, [3]]]]:
            m = p.request("echo-service", "echo", payload=value, src="scalar-client")
            _, body = p.recv_answer(m["msg_id"])
            self.assertEqual(body["type"], "response", bp.dump(body))
            self.assertEqual(body["payload"], value, bp.dump(body))
            self.assertEqual(body["dst"], "scalar-client")
            self.assertEqual(body["action"], "echo")

    def test_req_style_client_gets_the_three_frame_shape_back(self):
        p = self.peer()
        m = p.request("echo-service", "echo", payload={"x": 1}, src="req-client", delimiter=True)
        frames, body = p.recv_answer(m["msg_id"])
        self.assertEqual(len(frames), 2, frames)
        self.assertEqual(frames[0], b"")
        self.assertEqual(body["payload"], {"x": 1})

    def test_a_lua_service_answers_many_requests_in_order_of_arrival(self):
        p = self.peer()
        reqs = [p.request("echo-service", "echo", payload=i, src="burst-client")
                for i in range(200)]
        got = [p.recv()[1] for _ in reqs]
        self.assertEqual([b["correlation_id"] for b in got], [r["msg_id"] for r in reqs])
        self.assertEqual([b["payload"] for b in got], list(range(200)))

    def test_a_lua_service_answers_through_the_broker_like_a_peer(self):
        p = self.peer()
        before = p.call_broker("stats", src="stats-client")["payload"]
        m = p.request("echo-service", "echo", payload=1, src="stats-client")
        p.recv_answer(m["msg_id"])
        after = p.call_broker("stats", src="stats-client")["payload"]
        self.assertGreaterEqual(after["in"].get("response", 0), before["in"].get("response", 0) + 1)
        self.assertGreaterEqual(after["in"].get("request", 0), before["in"].get("request", 0) + 2)

    def test_the_name_is_reserved_for_nobody_else_to_spoof(self):
        # a plain client may not use a name a Lua service holds as its src (S2)
        p = self.peer()
        m = p.request("echo-service", "echo", payload=1, src="echo-service")
        self.expectError(p, "spoofed_src", correlation_id=m["msg_id"])


class NoServicesTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--policy", "", "--services", "")

    def test_services_empty_flag_loads_none(self):
        p = self.peer()
        self.assertEqual(bp.services(p), {})
        m = p.request("echo-service", "echo", payload=1, src="lonely-client")
        self.expectError(p, "no_such_service", correlation_id=m["msg_id"])


if __name__ == "__main__":
    bp.main()
