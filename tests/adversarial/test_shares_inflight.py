#!/usr/bin/python3
"""Shares of the in-flight table (hardening issue, item 11).

One connection that sends request after request to a service that never
answers must not fill the table for everyone: it gets `busy` saying that
*this connection* has as many requests in flight as one may, and others'
requests still go through. One instance that never answers must not
swallow a service's traffic or the table: once it holds its share,
round-robin passes it by, and a request only it could take gets `busy`
saying so. Both refusals are logged, rate-limited.

The broker runs with --max-inflight 20000 (a flag every version has), so
the default shares are 4096 (a tenth, at least 4096).
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402
import zmq  # noqa: E402

TABLE = 20000
SHARE = 4096


def recv_all(sock):
    """Every message waiting on a socket now, as dicts."""
    out = []
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return out
        out.append(bp.loads(frames[-1]))


class Flood:
    """Attackers sending requests, sinks that read and never answer,
    and answerers that answer everything, pumped in one thread."""

    def __init__(self, test, attackers, sinks=(), answerers=()):
        self.test = test
        self.attackers, self.sinks, self.answerers = attackers, list(sinks), list(answerers)
        self.sent = 0
        self.to_sinks = 0
        self.answered = 0
        self.errors = []            # error bodies the attackers got

    def pump(self):
        moved = 0
        for s in self.sinks:
            got = recv_all(s.sock)
            self.to_sinks += len(got)
            moved += len(got)
        for a in self.answerers:
            for req in recv_all(a.sock):
                a.answer(req, payload="ok")
                moved += 1
        for p in self.attackers:
            for body in recv_all(p.sock):
                moved += 1
                if body.get("type") == "error":
                    self.errors.append(body)
                else:
                    self.answered += 1
        return moved

    def send(self, dst, per_attacker, ttl_ms=300000, batch=250):
        left = {id(p): per_attacker for p in self.attackers}
        while any(left.values()):
            for p in self.attackers:
                n = min(batch, left[id(p)])
                for _ in range(n):
                    p.request(dst, "hold", ttl_ms=ttl_ms)
                left[id(p)] -= n
                self.sent += n
            self.pump()

    def settle(self, held, timeout):
        """Pump until every request was answered, refused or is held by a
        sink, or nothing moved for half a second (the broker drops an error
        that the attacker's full queue cannot take, as it should)."""
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.pump():
                idle_since = time.monotonic()
                continue
            if self.answered + len(self.errors) + held() >= self.sent:
                return
            if time.monotonic() - idle_since > 0.5 * bp.SLOW:
                return
            time.sleep(0.01)
        self.test.fail("flood did not settle: sent %d, answered %d, refused %d, held %d"
                       % (self.sent, self.answered, len(self.errors), held()))


class RequesterShareTest(bp.BrokerTestCase):
    # a sink's queue (--send-hwm, 1000 by default) must not fill before the
    # share does: on a loaded machine the sink reads late, and "sh-sink
    # cannot take more messages" would answer first
    BROKER_ARGS = ("--max-inflight", str(TABLE), "--send-hwm", str(TABLE))

    def test_one_connection_cannot_fill_the_table(self):
        sink = self.peer(register="sh-sink")
        echo = self.peer(register="sh-echo")
        attacker = self.peer(identity="sh-attacker", name="sh-greedy")
        flood = Flood(self, [attacker], sinks=[sink])
        flood.send("sh-sink", TABLE)
        flood.settle(lambda: flood.to_sinks, 30 * bp.SLOW)

        # everyone else is served at once
        victim = self.peer(name="sh-victim")
        round_trips = []
        for i in range(5):
            start = time.monotonic()
            m = victim.request("sh-echo", "hello")
            _, req = echo.recv(2 * bp.SLOW)
            self.assertEqual(req["msg_id"], m["msg_id"])
            echo.answer(req, payload="hi")
            _, answer = victim.recv_answer(m["msg_id"], 2 * bp.SLOW)
            self.assertEqual(answer["type"], "response", bp.dump(answer))
            round_trips.append(time.monotonic() - start)
        print("victim round trips after the flood: %s ms"
              % ", ".join("%.1f" % (t * 1000) for t in round_trips), file=sys.stderr)
        self.assertLess(max(round_trips), 0.5 * bp.SLOW)

        # the attacker holds its share and no more, and was told why
        self.assertLessEqual(flood.to_sinks, SHARE)
        self.assertGreater(len(flood.errors), 0, "the attacker filled the table unrefused")
        first = flood.errors[0]
        self.assertError(first, "busy", dst="sh-greedy")
        self.assertRegex(first["payload"]["message"],
                         r"^this connection has %d requests in flight, the most one connection may"
                         % SHARE)
        self.assertNotIn("sh-sink", first["payload"]["message"])
        self.assertEqual({bp.error_code(e) for e in flood.errors}, {"busy"})

        self.assertEqual(victim.call_broker("stats")["payload"]["inflight"], flood.to_sinks)

        # the refusals are logged, at most a few lines a minute
        lines = [l for l in self.broker.log_lines() if "refused a request from peer sh-attacker" in l]
        self.assertGreater(len(lines), 0, self.broker.log_text()[-2000:])
        self.assertIn("this connection has %d requests in flight" % SHARE, lines[0])
        self.assertLessEqual(len(lines), 12)

        # once its requests are answered the attacker may send again
        attacker.close()
        sink.close()
        self.assertTrue(bp.wait_until(
            lambda: victim.call_broker("stats")["payload"]["inflight"] == 0, 10 * bp.SLOW))


class HandlerShareTest(bp.BrokerTestCase):
    BROKER_ARGS = ("--max-inflight", str(TABLE))

    def test_an_instance_that_never_answers_gets_only_its_share(self):
        # one instance of sh-pay swallows everything; the other answers
        hole = self.peer(identity="sh-hole")
        hole.register("sh-pay")
        hole.register("sh-void")            # a name only the hole holds
        good = self.peer(register="sh-pay")
        attackers = [self.peer(name="sh-caller-%d" % i) for i in range(5)]
        flood = Flood(self, attackers, sinks=[hole], answerers=[good])
        flood.send("sh-pay", TABLE // len(attackers))
        flood.settle(lambda: flood.to_sinks, 60 * bp.SLOW)

        # the hole took its share, the rest went to the instance that answers
        self.assertLessEqual(flood.to_sinks, SHARE)
        self.assertGreaterEqual(flood.answered, TABLE - SHARE - len(flood.errors))
        self.assertEqual({bp.error_code(e) for e in flood.errors} - {"busy"}, set())

        # now every request to sh-pay is answered, none left to the hole
        victim = self.peer(name="sh-shopper")
        ids = [victim.request("sh-pay", "buy")["msg_id"] for _ in range(20)]
        deadline = time.monotonic() + 5 * bp.SLOW
        answers = {}
        while len(answers) < len(ids) and time.monotonic() < deadline:
            for req in recv_all(good.sock):
                good.answer(req, payload="paid")
            for body in recv_all(victim.sock):
                answers[body.get("correlation_id")] = body
            self.assertEqual(recv_all(hole.sock), [], "a request went to the full instance")
            time.sleep(0.01)
        self.assertEqual(sorted(answers), sorted(ids))
        self.assertEqual({b["type"] for b in answers.values()}, {"response"})

        # a name only the hole holds: busy, naming the instance's share
        logged_before = self.broker.log_text().count("refused a request from peer")
        m = victim.request("sh-void", "drop")
        body = self.expectError(victim, "busy", correlation_id=m["msg_id"], timeout=2 * bp.SLOW)
        self.assertRegex(body["payload"]["message"],
                         r"^every instance of sh-void has %d requests in flight, "
                         r"the most one instance may" % SHARE)
        self.assertEqual(recv_all(hole.sock), [])
        if logged_before < 10:      # else this minute's lines are used up (rate limit)
            self.assertTrue(self.broker.wait_for_log(
                r"WARN +refused a request from peer \S+ to sh-void: every instance of sh-void",
                timeout=2 * bp.SLOW), self.broker.log_text()[-2000:])


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
