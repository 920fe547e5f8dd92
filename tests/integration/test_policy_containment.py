#!/usr/bin/python3
"""Containment: a policy hook that loops, allocates without end, raises, or
returns something invalid costs that one message a `policy_error`; the
broker keeps routing everything else, and the log gets one line per failure
(with the traceback joined by " | "), at most 20 a minute. pcall and xpcall
cannot swallow the instruction budget."""
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

MEMORY_LIMIT = 8 * 1024 * 1024

# Line numbers matter: the tests look for "policy.lua:<line>:" in the log.
POLICY = """\
local function spin() while true do end end
local kept                                   -- a msg view kept past its call

local FILTERS = {
  loop = function() while true do end end,
  bomb = function()
    local t = {}
    for i = 1, math.huge do t[i] = string.rep("x", 1000) .. i end
  end,
  bomb_string = function() local s = "x" while true do s = s .. s end end,
  runtime_error = function() error("boom") end,                          -- line 11
  index_nil = function() local cfg = nil return cfg.limit end,           -- line 12
  bad_return = function() return 42 end,
  bad_return_string = function() return "yes" end,
  write_msg = function(msg) msg.dst = "elsewhere" end,
  keep_msg = function(msg) kept = msg end,
  unencodable = function(msg) local t = msg:table() t.payload = print return t end,
  change_msg_id = function(msg) local t = msg:table() t.msg_id = "other-id" return t end,
  change_src = function(msg) local t = msg:table() t.src = "someone-else" return t end,
  change_type = function(msg) local t = msg:table() t.type = "event" return t end,
  not_an_envelope = function(msg) local t = msg:table() t.dst = nil return t end,
  pcall_loop = function()
    local ok, err = pcall(spin)
    return false, "swallowed: " .. tostring(err)
  end,
  pcall_forever = function() while true do pcall(spin) end end,
  xpcall_loop = function()
    local ok, err = xpcall(spin, function(e) return e end)
    return false, "swallowed: " .. tostring(err)
  end,
  pcall_error = function()
    local ok, err = pcall(error, "ordinary")
    return false, "caught " .. tostring(err)
  end,
  pcall_bomb = function()
    local ok, err = pcall(function() local s = "x" while true do s = s .. s end end)
    return false, "caught " .. tostring(err)
  end,
}

function filter(msg)
  local f = FILTERS[msg.action]
  if f then
    return f(msg)
  end
end

function route(msg, ctx)
  local d = msg.dst
  if d == "route-loop" then while true do end end
  if d == "route-error" then error("no route") end
  if d == "route-number" then return 42 end
  if d == "route-bad-name" then return "not a name!" end
  if d == "route-bad-list" then return { "echo", 7 } end
  if d == "route-long-list" then
    local t = {}
    for i = 1, 17 do t[i] = "echo" end
    return t
  end
end

function on_register(name, peer)
  if name == "reg-error" then error("cannot decide") end
  if name == "reg-loop" then while true do end end
  if name == "reg-kept" then return kept.dst end
end
"""


class ContainmentCase(bp.FreshBrokerTestCase):
    """A fresh broker per test (the hook-failure log limit is per process)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.policy = bp.policy_dir(POLICY)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.b = bp.Broker(args=["--policy", self.policy,
                                 "--lua-memory-limit", str(MEMORY_LIMIT)])
        self.echo = self.peer(register="echo")
        self.client = self.peer(name="shop-ui")

    def assertRoutes(self):
        """A plain request still reaches echo and its answer comes back."""
        req = self.client.request("echo", action="plain")
        _, got = self.echo.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        self.echo.answer(got, payload={"ok": True})
        _, answer = self.client.recv_answer(req["msg_id"])
        self.assertEqual(answer["type"], "response", bp.dump(answer))

    def assertPolicyError(self, dst="echo", action="plain", max_seconds=1.0):
        """A request (dst, action) gets policy_error, fast, and is not delivered;
        other traffic keeps flowing. Returns the log text written meanwhile."""
        start = len(self.b.log_text())
        t0 = time.monotonic()
        req = self.client.request(dst, action=action)
        body = self.expectError(self.client, "policy_error", correlation_id=req["msg_id"],
                                timeout=3.0)
        self.assertLess(time.monotonic() - t0, max_seconds)
        self.assertEqual(body["dst"], "shop-ui")
        self.echo.expect_nothing(0.05)
        self.assertRoutes()
        self.assertTrue(self.b.alive())
        return self.b.log_text()[start:]

    def assertLoggedOnce(self, log, pattern):
        """Exactly one log line matches `pattern`, and it is a single line."""
        lines = [l for l in log.splitlines() if re.search(pattern, l)]
        self.assertEqual(len(lines), 1, "wanted one line matching %r in:\n%s" % (pattern, log))
        self.assertRegex(lines[0], bp.LOG_LINE_RE)
        return lines[0]


class FilterFailureTest(ContainmentCase):
    def test_endless_loop(self):
        log = self.assertPolicyError(action="loop")
        self.assertLoggedOnce(log, r"WARN .*filter\(\) failed: instruction budget exhausted")

    def test_memory_bomb_table(self):
        log = self.assertPolicyError(action="bomb")
        self.assertLoggedOnce(log, r"filter\(\) failed: memory limit of %d bytes" % MEMORY_LIMIT)

    def test_memory_bomb_string(self):
        log = self.assertPolicyError(action="bomb_string")
        self.assertLoggedOnce(log, r"filter\(\) failed: memory limit")

    def test_runtime_error_logs_file_line_and_traceback_on_one_line(self):
        log = self.assertPolicyError(action="runtime_error")
        line = self.assertLoggedOnce(log, r"filter\(\) failed: .*policy\.lua:11: boom")
        self.assertIn(" | ", line, "traceback not joined")
        self.assertIn("stack traceback:", line)
        log = self.assertPolicyError(action="index_nil")
        self.assertLoggedOnce(log, r"policy\.lua:12: attempt to index a nil value")

    def test_invalid_return_values(self):
        for action in ("bad_return", "bad_return_string", "unencodable"):
            with self.subTest(action=action):
                self.assertPolicyError(action=action)

    def test_writing_or_keeping_msg_fails(self):
        log = self.assertPolicyError(action="write_msg")
        self.assertIn("read-only", log)
        self.assertRoutes()                  # nothing changed
        req = self.client.request("echo", action="keep_msg")
        _, got = self.echo.recv()            # keep_msg itself passes
        self.assertEqual(got["msg_id"], req["msg_id"])
        # on_register reads the kept view: an error, so policy_error
        start = len(self.b.log_text())
        p = self.peer()
        m = p.send(bp.msg("register", "reg-kept", "broker", "register"))
        self.expectError(p, "policy_error", correlation_id=m["msg_id"])
        self.assertIn("valid only during the hook", self.b.log_text()[start:])
        self.assertRoutes()

    def test_rewrite_may_not_change_msg_id_src_or_type(self):
        for action in ("change_msg_id", "change_src", "change_type", "not_an_envelope"):
            with self.subTest(action=action):
                self.assertPolicyError(action=action)

    def test_failures_interleaved_with_good_traffic(self):
        bad, good = [], []
        for i in range(10):
            bad.append(self.client.request("echo", action=("loop", "bomb", "runtime_error")[i % 3]))
            good.append(self.client.request("echo", action="plain", payload={"i": i}))
        for g in good:
            _, got = self.echo.recv()
            self.assertEqual(got["msg_id"], g["msg_id"])
            self.echo.answer(got)
        answers = {}
        for _ in range(20):
            _, body = self.client.recv()
            answers[body["correlation_id"]] = body
        for m in bad:
            self.assertEqual(bp.error_code(answers[m["msg_id"]]), "policy_error")
        for m in good:
            self.assertEqual(answers[m["msg_id"]]["type"], "response")
        self.echo.expect_nothing(0.1)


class BudgetTest(ContainmentCase):
    def test_pcall_cannot_swallow_the_budget(self):
        for action in ("pcall_loop", "pcall_forever", "xpcall_loop"):
            with self.subTest(action=action):
                self.assertPolicyError(action=action)

    def test_pcall_still_catches_ordinary_errors(self):
        req = self.client.request("echo", action="pcall_error")
        body = self.expectError(self.client, "denied", correlation_id=req["msg_id"])
        self.assertIn("caught", body["payload"]["message"])
        self.assertIn("ordinary", body["payload"]["message"])
        self.assertRoutes()

    def test_memory_error_caught_by_pcall_leaves_the_state_usable(self):
        for _ in range(3):
            req = self.client.request("echo", action="pcall_bomb")
            body = self.expectError(self.client, "denied", correlation_id=req["msg_id"])
            self.assertIn("not enough memory", body["payload"]["message"])
            self.assertRoutes()


class OtherHookFailureTest(ContainmentCase):
    def test_route_failures(self):
        for dst in ("route-loop", "route-error", "route-number", "route-bad-name",
                    "route-bad-list", "route-long-list"):
            with self.subTest(dst=dst):
                log = self.assertPolicyError(dst=dst)
                self.assertRegex(log, r"route\(\) failed")

    def test_on_register_failure_gets_policy_error_and_no_name(self):
        for name in ("reg-error", "reg-loop"):
            with self.subTest(name=name):
                p = self.peer()
                m = p.send(bp.msg("register", name, "broker", "register"))
                self.expectError(p, "policy_error", correlation_id=m["msg_id"], timeout=3.0)
                self.assertNotIn(name, bp.services(self.client))
                self.assertRoutes()


class LogLimitTest(ContainmentCase):
    def test_hook_failures_log_at_most_20_lines_a_minute(self):
        start = len(self.b.log_text())
        for _ in range(30):
            req = self.client.request("echo", action="runtime_error")
            self.expectError(self.client, "policy_error", correlation_id=req["msg_id"])
        self.assertRoutes()
        lines = [l for l in self.b.log_text()[start:].splitlines() if "filter() failed" in l]
        self.assertEqual(len(lines), 20, "\n".join(lines))
        stats = self.client.call_broker("stats")["payload"]
        self.assertEqual(stats["errors"].get("policy_error"), 30, bp.dump(stats))


if __name__ == "__main__":
    bp.main()
