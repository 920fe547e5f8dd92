#!/usr/bin/python3
"""Live reload of the policy: saving the file (rewritten in place, or a new
file renamed over it) changes routing within a second with no lost message;
a broken edit keeps the previous version (the log names file and line);
SIGHUP and the broker action reload_policy reload; each load starts with
fresh Lua globals; a removed file keeps the loaded version."""
import os
import re
import shutil
import signal
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

ROUTE_TO = """\
-- every request for "shop" goes to one service
function route(msg, ctx)
  if msg.dst == "shop" then
    return "%s"
  end
end
"""

# a syntax error (Lua reports it on line 4, where the expression breaks off)
BROKEN_SYNTAX = """\
function route(msg, ctx)
  if msg.dst == "shop" then
    return "green" +
  end
end
"""

# a runtime error while loading, on line 3
BROKEN_AT_LOAD = """\
function route(msg, ctx) return "green" end
local limits = nil
local max = limits.max
"""

BROKEN_HOOK_TYPE = """\
route = "green"
"""

COUNTER = """\
-- n is a Lua global: kept between calls, fresh on each load
n = 0
function filter(msg)
  if msg.action == "count" then
    n = n + 1
    return false, "count " .. n
  end
end
"""

SWITCH_WITHIN = 1.0


class Traffic:
    """A client sending a request to "shop" every `period` s while services
    answer each one; records who answered what."""

    def __init__(self, client, services, period=0.005):
        self.client = client
        self.services = services            # name -> peer
        self.period = period
        self.sent = []                      # (msg_id, monotonic time sent)
        self.answers = {}                   # msg_id -> [answer bodies]
        self.poller = zmq.Poller()
        self.poller.register(client.sock, zmq.POLLIN)
        for p in services.values():
            self.poller.register(p.sock, zmq.POLLIN)
        self.by_sock = {p.sock: p for p in services.values()}
        self.next_send = time.monotonic()

    def step(self, sending=True):
        now = time.monotonic()
        if sending and now >= self.next_send:
            m = self.client.request("shop", action="buy", payload={"n": len(self.sent)})
            self.sent.append((m["msg_id"], now))
            self.next_send = now + self.period
        for sock, _ in self.poller.poll(max(1, int((self.next_send - now) * 1000))):
            frames = sock.recv_multipart()
            body = bp.loads(frames[-1])
            if sock is self.client.sock:
                self.answers.setdefault(body.get("correlation_id"), []).append(body)
            else:
                svc = self.by_sock[sock]
                svc.answer(body, payload={"by": svc.name})

    def run(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()

    def run_until(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.step()
            if pred():
                return True
        return False

    def finish(self, timeout=2.0):
        """Stops sending and waits for every answer."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.answers) < len(self.sent):
            self.step(sending=False)
        self.step(sending=False)            # a duplicate would show up now

    def answered_by(self, msg_id):
        [body] = self.answers[msg_id]
        return body["payload"]["by"] if body["type"] == "response" else body["type"]

    def first_sent_after(self, t, by):
        """Time from t to the sending of the first request sent after t that `by` answered."""
        for msg_id, sent_at in self.sent:
            if sent_at >= t and len(self.answers.get(msg_id, ())) == 1 \
                    and self.answered_by(msg_id) == by:
                return sent_at - t
        return None


class ReloadCase(bp.FreshBrokerTestCase):
    """A fresh broker per test running policy.lua in a temp dir."""

    INITIAL = ROUTE_TO % "blue"

    def setUp(self):
        super().setUp()
        self.tmp, self.policy = bp.policy_dir(self.INITIAL)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.b = bp.Broker(args=["--policy", self.policy])

    def write(self, text):
        """Rewrites the policy in place (open, truncate, write, close)."""
        with open(self.policy, "w") as f:
            f.write(text)

    def replace(self, text):
        """Writes a new file beside the policy and renames it over it."""
        tmp = self.policy + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.policy)

    def blue_green(self):
        services = {"blue": self.peer(register="blue"), "green": self.peer(register="green")}
        return Traffic(self.peer(name="shop-ui"), services)

    def assertEveryRequestAnsweredOnce(self, traffic):
        traffic.finish()
        for msg_id, _ in traffic.sent:
            got = traffic.answers.get(msg_id, [])
            self.assertEqual(len(got), 1, "request %s got %d answers: %r" % (msg_id, len(got), got))
            self.assertEqual(got[0]["type"], "response", bp.dump(got[0]))
        self.assertEqual(set(traffic.answers), {m for m, _ in traffic.sent}, "unexpected answers")

    def assertSwitches(self, traffic, edit, to, other):
        """Runs traffic, applies `edit`, and checks that routing moves from
        `other` to `to` within SWITCH_WITHIN s, in one step, losing nothing."""
        traffic.run(0.2)
        start = len(traffic.sent)
        t_edit = time.monotonic()
        edit()
        switched = traffic.run_until(lambda: traffic.first_sent_after(t_edit, to) is not None,
                                     SWITCH_WITHIN + 0.5)
        self.assertTrue(switched, "routing did not change to %s:\n%s" % (to, self.b.log_text()))
        traffic.run(0.2)
        self.assertEveryRequestAnsweredOnce(traffic)
        delay = traffic.first_sent_after(t_edit, to)
        self.assertLess(delay, SWITCH_WITHIN, "took %.3f s" % delay)
        seq = [traffic.answered_by(m) for m, _ in traffic.sent[start:]]
        first = seq.index(to)
        self.assertEqual(set(seq[:first]), {other} if first else set(), seq)
        self.assertEqual(set(seq[first:]), {to}, "routing went back and forth: %s" % seq)


class LiveReloadTest(ReloadCase):
    def test_rewrite_in_place_switches_within_a_second_losing_nothing(self):
        t = self.blue_green()
        self.assertSwitches(t, lambda: self.write(ROUTE_TO % "green"), "green", "blue")
        self.assertSwitches(t, lambda: self.write(ROUTE_TO % "blue"), "blue", "green")

    def test_rename_over_switches_within_a_second_losing_nothing(self):
        t = self.blue_green()
        self.assertSwitches(t, lambda: self.replace(ROUTE_TO % "green"), "green", "blue")
        self.assertSwitches(t, lambda: self.replace(ROUTE_TO % "blue"), "blue", "green")

    def test_reload_is_logged_with_its_hooks(self):
        start = len(self.b.log_text())
        self.replace(COUNTER)
        self.assertTrue(self.b.wait_for_log(r"policy %s loaded \(hooks: filter\)"
                                            % re.escape(self.policy), 2.0, start),
                        self.b.log_text())

    def test_removed_file_keeps_the_loaded_version_until_it_returns(self):
        t = self.blue_green()
        start = len(self.b.log_text())
        os.unlink(self.policy)
        self.assertTrue(self.b.wait_for_log(r"WARN .*policy %s was removed; the loaded version keeps running"
                                            % re.escape(self.policy), 2.0, start),
                        self.b.log_text())
        t.run(0.2)
        self.assertEqual({t.answered_by(m) for m, _ in t.sent if m in t.answers}, {"blue"})
        self.assertSwitches(t, lambda: self.write(ROUTE_TO % "green"), "green", "blue")


class BrokenEditTest(ReloadCase):
    def assertRefused(self, text, line, error):
        """Writes a broken version; the log names file, line and error, and
        routing stays with the running version (blue)."""
        t = self.blue_green()
        t.run(0.1)
        start = len(self.b.log_text())
        self.write(text)
        where = re.escape(self.policy) + (":%d:" % line if line else ":")
        m = self.b.wait_for_log(r"ERROR +policy refused, the previous version keeps running: "
                                + where + " .*" + error, 2.0, start)
        self.assertTrue(m, "no refusal in the log:\n" + self.b.log_text())
        t.run(0.3)
        self.assertEveryRequestAnsweredOnce(t)
        self.assertEqual({t.answered_by(m) for m, _ in t.sent}, {"blue"})
        for line_text in self.b.log_lines():
            self.assertRegex(line_text, bp.LOG_LINE_RE, "not one line per event")
        # the fixed file loads
        self.assertSwitches(t, lambda: self.write(ROUTE_TO % "green"), "green", "blue")

    def test_syntax_error_keeps_the_old_policy(self):
        self.assertRefused(BROKEN_SYNTAX, 4, "unexpected symbol")

    def test_error_while_loading_keeps_the_old_policy(self):
        self.assertRefused(BROKEN_AT_LOAD, 3, "attempt to index a nil value")

    def test_hook_that_is_not_a_function_keeps_the_old_policy(self):
        self.assertRefused(BROKEN_HOOK_TYPE, None, "route must be a function")


class ReloadTriggersTest(ReloadCase):
    INITIAL = COUNTER

    def count(self, client):
        m = client.request("anyone", action="count")
        body = self.expectError(client, "denied", correlation_id=m["msg_id"])
        return int(body["payload"]["message"].split()[1])

    def test_sighup_reloads_with_fresh_globals(self):
        c = self.peer(name="shop-ui")
        self.assertEqual([self.count(c) for _ in range(3)], [1, 2, 3])
        start = len(self.b.log_text())
        self.b.send_signal(signal.SIGHUP)
        self.assertTrue(self.b.wait_for_log(r"SIGHUP: reloading the policy", 2.0, start))
        self.assertTrue(self.b.wait_for_log(r"policy .* loaded", 2.0, start), self.b.log_text())
        self.assertEqual(self.count(c), 1)

    def test_reload_policy_action(self):
        c = self.peer(name="shop-ui")
        self.assertEqual([self.count(c) for _ in range(2)], [1, 2])
        body = c.call_broker("reload_policy")
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["payload"], {"status": "ok", "hooks": "filter"})
        self.assertEqual(self.count(c), 1)

    def test_reload_policy_action_reports_a_refused_version(self):
        c = self.peer(name="shop-ui")
        self.assertEqual([self.count(c) for _ in range(2)], [1, 2])
        self.write(BROKEN_SYNTAX)
        body = c.call_broker("reload_policy")
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["payload"]["status"], "error", bp.dump(body))
        self.assertTrue(body["payload"]["message"].startswith(self.policy + ":4:"), bp.dump(body))
        # the running version, and its globals, carry on
        self.assertEqual(self.count(c), 3)

    def test_sighup_with_a_broken_file_keeps_the_running_state(self):
        c = self.peer(name="shop-ui")
        self.assertEqual(self.count(c), 1)
        self.write(BROKEN_SYNTAX)
        start = len(self.b.log_text())
        self.b.send_signal(signal.SIGHUP)
        self.assertTrue(self.b.wait_for_log(r"policy refused", 2.0, start), self.b.log_text())
        self.assertEqual(self.count(c), 2)


if __name__ == "__main__":
    bp.main()
