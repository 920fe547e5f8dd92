#!/usr/bin/python3
"""A Lua service with a bug, an endless loop or a memory bomb answers its
requester with error service_error, logs one line, and disturbs neither the
broker nor other services, Lua or remote (issue 4, docs/lua-services.md).
Rules of docs/protocol.md checked: T8 (a failing handler answers
service_error), T4 (exactly one answer to the requester).
Fixture: tests/lua_services/faulty.lua."""
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

SERVICES = bp.SERVICES_DIR
FIXTURES = bp.LUA_FIXTURES
MEMORY_LIMIT = 8388608


class FaultyServiceCase(bp.LuaServicesTestCase):
    """A broker with echo.lua, faulty.lua and on_event_only.lua, a client
    and a remote service "remote-svc-N" (a name of its own for each test:
    the previous test's instance may not be seen gone yet, and round-robin
    would hand it the ping); no tests of its own."""

    SERVICE_FILES = {"echo.lua": os.path.join(SERVICES, "echo.lua"),
                     "faulty.lua": os.path.join(FIXTURES, "faulty.lua"),
                     "on_event_only.lua": os.path.join(FIXTURES, "on_event_only.lua")}
    EXTRA_ARGS = ("--lua-memory-limit", str(MEMORY_LIMIT))

    def setUp(self):
        super().setUp()
        self.client = self.peer(name="contain-client")
        FaultyServiceCase.remote_count = getattr(FaultyServiceCase, "remote_count", 0) + 1
        self.remote_name = "remote-svc-%d" % FaultyServiceCase.remote_count
        self.remote = self.peer(register=self.remote_name)

    def ask(self, dst, action, payload=None, timeout=2.0):
        m = self.client.request(dst, action, payload=payload)
        return self.client.recv_answer(m["msg_id"], timeout)[1], m

    def assertServiceError(self, action, message=None, code="service_error"):
        start = time.monotonic()
        body, m = self.ask("lua-faulty", action, {"n": 1})
        elapsed = time.monotonic() - start
        self.assertEqual(body["type"], "error", bp.dump(body))
        self.assertEqual(bp.error_code(body), code, bp.dump(body))
        self.assertEqual(body["src"], "lua-faulty")
        self.assertEqual(body["dst"], "contain-client")
        self.assertEqual(body["action"], action)
        self.assertEqual(body["correlation_id"], m["msg_id"])
        self.assertRegex(body["msg_id"], bp.UUID_RE)
        self.assertRegex(body["timestamp"], bp.TIMESTAMP_RE)
        if message:
            self.assertIn(message, body["payload"]["message"])
        self.assertLess(elapsed, 1.0 * bp.SLOW, "the error took %.2f s" % elapsed)
        return body

    def assertOthersAnswer(self):
        """The echo (Lua), the remote service and the faulty one itself still answer."""
        body, _ = self.ask("echo-service", "echo", {"still": "here"})
        self.assertEqual(body.get("payload"), {"still": "here"}, bp.dump(body))
        m = self.client.request(self.remote_name, "ping", payload=1)
        _, req = self.remote.recv()
        self.assertEqual(req["msg_id"], m["msg_id"])
        self.remote.answer(req, payload={"pong": True})
        _, body = self.client.recv_answer(m["msg_id"])
        self.assertEqual(body["payload"], {"pong": True})
        body, _ = self.ask("lua-faulty", "ok", {"x": 1})
        self.assertEqual(body.get("payload"), {"ok": True, "echo": {"x": 1}}, bp.dump(body))
        self.assertAlive()

    def wait_log(self, pattern, start):
        m = self.broker.wait_for_log(pattern, timeout=2.0, start=start)
        self.assertTrue(m, "log has no %r; log:\n%s" % (pattern, self.broker.log_text()[start:]))
        return m


class ContainmentTest(FaultyServiceCase):
    """Each fault once, and its log line (the log allows 20 failure lines a
    minute: tests that fail more often run in BurstTest, on their own broker)."""

    def test_runtime_error_answers_service_error_and_logs_the_traceback(self):
        mark = len(self.broker.log_text())
        self.assertServiceError("crash", "the service failed")
        line = self.wait_log(r"(?m)^.*lua-faulty \(faulty\.lua\): on_request failed: .*$",
                             mark).group(0)
        self.assertRegex(line, r"faulty\.lua:\d+: attempt to index a nil value")
        self.assertIn("stack traceback", line)  # one line: the traceback joined with " | "
        self.assertRegex(line, bp.LOG_LINE_RE)
        self.assertOthersAnswer()

    def test_error_raised_by_the_handler(self):
        mark = len(self.broker.log_text())
        self.assertServiceError("raise")
        self.wait_log(r"faulty\.lua:\d+: raised on purpose", mark)
        self.assertOthersAnswer()

    def test_endless_loop_is_cut_by_the_instruction_budget(self):
        mark = len(self.broker.log_text())
        self.assertServiceError("loop")
        self.wait_log(r"lua-faulty \(faulty\.lua\): on_request failed: instruction budget", mark)
        self.assertOthersAnswer()

    def test_pcall_cannot_swallow_the_budget(self):
        body = self.assertServiceError("pcall_loop")
        self.assertNotIn("escaped", bp.dump(body))
        self.assertOthersAnswer()

    def test_memory_bomb_is_cut_by_the_memory_limit(self):
        mark = len(self.broker.log_text())
        self.assertServiceError("bomb")
        self.wait_log(r"on_request failed: memory limit of %d bytes" % MEMORY_LIMIT, mark)
        self.assertOthersAnswer()
        # the memory came back: it can do it again, and still answer after
        self.assertServiceError("bomb")
        self.assertServiceError("big_string")
        self.assertOthersAnswer()

    def test_return_value_that_is_not_json(self):
        self.assertServiceError("not_json", "not JSON")
        self.assertOthersAnswer()

    def test_failing_event_handlers_are_logged_and_answer_nothing(self):
        mark = len(self.broker.log_text())
        sender = self.peer()
        sender.send(bp.msg("event", "ev-sender", "lua-faulty", "crash", payload={}))
        sender.send(bp.msg("event", "ev-sender", "lua-faulty", "loop", payload={}))
        self.wait_log(r"lua-faulty \(faulty\.lua\): on_event failed: .*event handler crashed", mark)
        self.wait_log(r"lua-faulty \(faulty\.lua\): on_event failed: instruction budget", mark)
        sender.expect_nothing(0.2)
        self.assertOthersAnswer()

    # -- the handler's answers -------------------------------------------

    def test_nil_and_message_answers_service_error(self):
        self.assertServiceError("fail", "refused on purpose")

    def test_nil_message_and_code_answers_that_code(self):
        body = self.assertServiceError("fail_code", "no such thing", code="not_found")
        self.assertEqual(body["payload"], {"code": "not_found", "message": "no such thing"})

    def test_unknown_action_in_the_service_own_words(self):
        self.assertServiceError("nope", "unknown action nope", code="unknown_action")

    def test_returning_nothing_answers_null(self):
        body, _ = self.ask("lua-faulty", "nothing")
        self.assertEqual(body["type"], "response")
        self.assertIn("payload", body)
        self.assertIsNone(body["payload"])

    def test_bus_json_of_payload_json_forwards_its_bytes(self):
        for payload in ('{"z":1,   "a" : [true,false]}', '"a \\"quoted\\" text"', '[1, 2.5e3]', '7'):
            raw = ('{"msg_id":"%s","type":"request","src":"contain-client","dst":"lua-faulty",'
                   '"action":"forward","payload":%s}' % (bp.new_id(), payload))
            self.client.send(raw)
            frames, body = self.client.recv()
            self.assertEqual(body["type"], "response", bp.dump(body))
            self.assertIn(b'"payload":' + payload.encode() + b',', frames[-1])

    def test_a_changed_msg_payload_is_sent_as_changed(self):
        # the decoded payload is the handler's to change: what it returns is
        # encoded, never mistaken for the request's bytes
        body, _ = self.ask("lua-faulty", "change", {"kept": [1, 2]})
        self.assertEqual(body["payload"], {"kept": [1, 2], "added": True}, bp.dump(body))

    def test_bus_json_refuses_text_that_is_not_json(self):
        self.assertServiceError("bad_raw", "failed while handling")
        self.assertOthersAnswer()

    def test_a_payload_nested_deeper_than_a_message_may_is_refused_not_sent(self):
        # the broker would answer bad_json to anyone sending it (E1, depth 64)
        self.assertServiceError("too_deep_raw", "failed while handling")
        self.assertServiceError("too_deep_table", "not JSON")
        self.assertOthersAnswer()

    def test_a_string_that_is_not_utf8_is_refused_not_sent(self):
        self.assertServiceError("bad_utf8", "not JSON")
        self.assertOthersAnswer()

    def test_a_service_without_on_request_answers_service_error(self):
        m = self.client.request("on_event_only", "anything")
        _, body = self.client.recv_answer(m["msg_id"])
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        self.assertEqual(body["src"], "on_event_only")
        self.assertIn("no on_request", body["payload"]["message"])


class BurstTest(FaultyServiceCase):
    """Faults over and over: the broker and the other services carry on."""

    def test_a_burst_of_loops_does_not_stall_a_remote_service(self):
        loops = [self.client.request("lua-faulty", "loop") for _ in range(20)]
        m = self.client.request(self.remote_name, "ping")
        _, req = self.remote.recv(timeout=2.0)
        self.assertEqual(req["msg_id"], m["msg_id"])
        self.remote.answer(req, payload="pong")
        want = {r["msg_id"] for r in loops} | {m["msg_id"]}
        got = {}
        deadline = time.monotonic() + 3.0 * bp.SLOW
        while len(got) < len(want) and time.monotonic() < deadline:
            _, body = self.client.recv(timeout=max(0.01, deadline - time.monotonic()))
            got[body["correlation_id"]] = body
        self.assertEqual(set(got), want)
        self.assertEqual(got[m["msg_id"]]["payload"], "pong")
        for r in loops:
            self.assertEqual(bp.error_code(got[r["msg_id"]]), "service_error")
        self.assertOthersAnswer()

    def test_state_survives_faults(self):
        first = self.ask("lua-faulty", "count")[0]["payload"]["count"]
        for action in ("crash", "loop", "bomb"):
            self.assertServiceError(action)
        self.assertEqual(self.ask("lua-faulty", "count")[0]["payload"]["count"], first + 1)


class RateLimitTest(bp.LuaServicesTestCase):
    """Many failures write at most 20 lines a minute (one per failure)."""

    SERVICE_FILES = {"faulty.lua": os.path.join(FIXTURES, "faulty.lua")}

    def test_failures_are_logged_one_line_each_and_rate_limited(self):
        client = self.peer(name="rl-client")
        reqs = [client.request("lua-faulty", "crash") for _ in range(50)]
        for r in reqs:
            _, body = client.recv_answer(r["msg_id"])
            self.assertEqual(bp.error_code(body), "service_error")
        m = client.request("lua-faulty", "count")
        self.assertEqual(client.recv_answer(m["msg_id"])[1]["payload"], {"count": 1})
        lines = [l for l in self.broker.log_lines() if "on_request failed" in l]
        self.assertEqual(len(lines), 20, "\n".join(lines))
        for l in lines:
            self.assertRegex(l, bp.LOG_LINE_RE)
            self.assertRegex(l, r"faulty\.lua:\d+: attempt to index a nil value")


class AnswerBeyondTheMemoryLimitTest(bp.BrokerTestCase):
    """An answer to a Lua service's bus.request that does not fit in its
    memory must not take the broker down (the callback fails, and is logged).
    (Found by this test: the payload was once decoded outside the protected
    call, and a failed allocation there aborted the broker.)"""

    @classmethod
    def setUpClass(cls):
        cls.dir = bp.services_dir({"echo.lua": os.path.join(SERVICES, "echo.lua"),
                                   "relay.lua": os.path.join(FIXTURES, "relay.lua")})

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_a_remote_answer_bigger_than_the_services_memory(self):
        b = bp.Broker(args=("--policy", "", "--services", self.dir,
                            "--lua-memory-limit", "1048576"))  # the smallest allowed
        self.addCleanup(b.cleanup)
        client, remote = b.peer(name="big-client"), b.peer()
        self.addCleanup(client.close)
        self.addCleanup(remote.close)
        remote.register("big-answers")
        m = client.request("lua-relay", "call", payload={"dst": "big-answers", "action": "get"})
        self.assertEqual(client.recv_answer(m["msg_id"])[1]["type"], "response")
        _, req = remote.recv()
        remote.answer(req, payload="z" * 1040000)  # under --max-message-bytes, over 1 MiB of Lua
        time.sleep(0.2)
        self.assertTrue(b.alive(), "broker died (exit %s); log:\n%s"
                        % (b.proc.returncode, b.log_text()[-2000:]))
        for dst, action in (("echo-service", "echo"), ("lua-relay", "now")):
            m = client.request(dst, action, payload={})
            self.assertEqual(client.recv_answer(m["msg_id"])[1]["type"], "response")
        self.assertEqual(b.stop(), 0)


if __name__ == "__main__":
    bp.main()
