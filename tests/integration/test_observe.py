#!/usr/bin/python3
"""Issue 19: see into the bus. Numbers that tell the truth (outcomes, as
routed and as addressed, latency up to the longest deadline), who is
connected (peers), tracing requests live, dead letters before a replay,
refusals in the log, and the journal's fields. Real broker, real peers,
the real smartshop-ctl.

    SMARTSHOP_BROKER=build/smartshop-broker /usr/bin/python3 tests/integration/test_observe.py
"""
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


def ctl_path():
    return os.environ.get("SMARTSHOP_CTL") or os.path.join(
        os.path.dirname(bp.broker_path()), "smartshop-ctl")


def ctl(endpoint, *args, timeout=15):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSHOP_")}
    return subprocess.run([ctl_path(), "--endpoint", endpoint] + list(args), capture_output=True,
                          text=True, timeout=timeout * bp.SLOW, env=env)


def series_of(peer, service, action=None):
    """The metrics action's series of `service` (as routed), by (dst, action)."""
    body = peer.call_broker("metrics")["payload"]
    # (a broker without "dst" keys its series by service: the test then
    # fails on what it checks, not on the key)
    return {(s.get("dst", s["service"]), s["action"]): s for s in body["series"]
            if s["service"] == service and (action is None or s["action"] == action)}


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5 * bp.SLOW) as r:
        return r.read().decode()


RAISER = """
local s = { name = "obs-raiser" }
function s.on_request(msg)
  error("boom")
end
return s
"""


class LuaRaisesTest(bp.LuaServicesTestCase):
    """A Lua service that raises on every request is failing, not answering."""

    @classmethod
    def make_services_dir(cls):
        d = tempfile.mkdtemp(prefix="smartshop-lua-")
        with open(os.path.join(d, "raiser.lua"), "w") as f:
            f.write(RAISER)
        return d

    def test_a_raising_service_counts_as_failed_with_service_error(self):
        client = self.peer(name="obs-c1")
        for _ in range(3):
            m = client.request("obs-raiser", "get")
            _, body = client.recv_answer(m["msg_id"])
            self.assertEqual(body["type"], "error", bp.dump(body))
        s = series_of(client, "obs-raiser")[("obs-raiser", "get")]
        self.assertEqual((s["requests"], s["failed"]), (3, 3), s)
        self.assertEqual(s["ok"], 0, s)
        self.assertEqual(s["outcomes"]["error"], 3, s)
        self.assertEqual(s["errors"], {"service_error": 3}, s)
        stats = client.call_broker("stats")["payload"]
        self.assertEqual(stats["requests"]["failed"], 3, stats)
        self.assertEqual(stats["service_errors"]["service_error"], 3, stats)


class OutcomesTest(bp.BrokerTestCase):
    METRICS_PORT = bp.free_port()
    BROKER_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % METRICS_PORT)

    def test_an_error_answer_is_a_failure_with_its_code(self):
        svc = self.peer(register="obs-stock")
        client = self.peer(name="obs-c2")
        m = client.request("obs-stock", "reserve")
        _, got = svc.recv()
        svc.answer(got, type="error", payload={"code": "insufficient_stock", "message": "none left"})
        client.recv_answer(m["msg_id"])
        m = client.request("obs-stock", "reserve")
        _, got = svc.recv()
        svc.answer(got, payload={"ok": True})
        client.recv_answer(m["msg_id"])
        s = series_of(client, "obs-stock")[("obs-stock", "reserve")]
        self.assertEqual((s["requests"], s["failed"]), (2, 1), s)
        self.assertEqual(s["ok"], 1, s)
        self.assertEqual(s["errors"], {"insufficient_stock": 1}, s)
        text = scrape(self.METRICS_PORT)
        labels = 'service="obs-stock",action="reserve",dst="obs-stock"'
        self.assertIn('smartshop_request_failures_total{%s} 1' % labels, text)
        self.assertIn('smartshop_request_outcomes_total{%s,outcome="error"} 1' % labels, text)
        self.assertIn('smartshop_request_errors_total{%s,code="insufficient_stock"} 1' % labels, text)
        self.assertIn('smartshop_service_errors_total{code="(other)"} 1', text)

    def test_timeouts_gone_and_refusals_are_outcomes(self):
        svc = self.peer(register="obs-slow")
        client = self.peer(name="obs-c3")
        m = client.request("obs-slow", "wait", ttl_ms=100)
        svc.recv()
        _, body = client.recv_answer(m["msg_id"], 5 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "timeout")
        m = client.request("obs-slow", "wait")
        svc.recv()
        svc.close()
        _, body = client.recv_answer(m["msg_id"], 5 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "service_gone")
        m = client.request("obs-nobody-here", "wait")
        client.recv_answer(m["msg_id"])
        s = series_of(client, "obs-slow")[("obs-slow", "wait")]
        self.assertEqual(s["failed"], 2, s)
        self.assertEqual(s["outcomes"]["timeout"], 1, s)
        self.assertEqual(s["outcomes"]["gone"], 1, s)
        self.assertEqual(s["failed"], 2, s)
        # a name nobody holds makes no series of its own: one "_none" for all
        unrouted = series_of(client, "_none")
        self.assertGreaterEqual(sum(x["outcomes"]["refused"] for x in unrouted.values()), 1)
        stats = client.call_broker("stats")["payload"]["requests"]
        self.assertGreaterEqual(stats["refused"], 1, stats)
        self.assertEqual(stats["total"], stats["ok"] + stats["failed"], stats)

    def test_ctl_stats_metrics_and_top_split_ok_and_failed(self):
        svc = self.peer(register="obs-split")
        client = self.peer(name="obs-c4")
        for kind in ("response", "error"):
            m = client.request("obs-split", "go")
            _, got = svc.recv()
            svc.answer(got, type=kind, payload={"code": "nope", "message": "x"})
            client.recv_answer(m["msg_id"])
        out = ctl(self.broker.endpoint, "stats")
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = dict(l.split(None, 1) for l in out.stdout.splitlines() if l.strip())
        self.assertIn("requests.ok", lines)
        self.assertIn("requests.failed", lines)
        out = ctl(self.broker.endpoint, "metrics")
        self.assertEqual(out.returncode, 0, out.stderr)
        row = [l.split() for l in out.stdout.splitlines() if l.startswith("obs-split ")]
        self.assertEqual(len(row), 1, out.stdout)
        header = [l for l in out.stdout.splitlines() if l.startswith("SERVICE")][0].split()
        cells = dict(zip(header, row[0]))
        self.assertEqual((cells["REQUESTS"], cells["OK"], cells["FAILED"]), ("2", "1", "1"), out.stdout)
        out = ctl(self.broker.endpoint, "top", "1")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"SERVICE\s+REQ/S\s+OK/S\s+FAILED/S")


SLOW_ANSWER_S = 3.0


class LatencyBucketsTest(bp.BrokerTestCase):
    METRICS_PORT = bp.free_port()
    BROKER_ARGS = ("--metrics", "tcp://127.0.0.1:%d" % METRICS_PORT)

    def test_a_slow_answer_is_not_reported_as_fast(self):
        svc = self.peer(register="obs-tardy")
        client = self.peer(name="obs-c5")
        m = client.request("obs-tardy", "think")
        _, got = svc.recv()
        time.sleep(SLOW_ANSWER_S)
        svc.answer(got)
        client.recv_answer(m["msg_id"])
        s = series_of(client, "obs-tardy")[("obs-tardy", "think")]
        self.assertGreaterEqual(s["latency_ms"]["p99_le"], SLOW_ANSWER_S * 1000, s)
        text = scrape(self.METRICS_PORT)
        labels = 'service="obs-tardy",action="think",dst="obs-tardy"'
        self.assertIn('smartshop_request_duration_seconds_bucket{%s,le="2.5"} 0' % labels, text)
        self.assertIn('smartshop_request_duration_seconds_bucket{%s,le="5"} 1' % labels, text)
        # buckets reach the longest deadline a request may have (300 s)
        self.assertIn('smartshop_request_duration_seconds_bucket{%s,le="30"} 1' % labels, text)
        self.assertIn('smartshop_request_duration_seconds_bucket{%s,le="300"} 1' % labels, text)


ROUTING_POLICY = """
local policy = require "smartshop.policy"
local canary = require "smartshop.rules.canary"
local alias = require "smartshop.rules.alias"
policy.use {
  alias.new { aliases = { ["obs-shop"] = "obs-checkout" } },
  canary.new { service = "obs-checkout", canary = "obs-checkout-canary", percent = 50,
               sticky = false },
}
"""


class RoutedAndAddressedTest(bp.PolicyTestCase):
    POLICY = ROUTING_POLICY

    def answer_all(self, services, n):
        got = 0
        deadline = time.monotonic() + 5 * bp.SLOW
        while got < n and time.monotonic() < deadline:
            for s in services:
                try:
                    _, body = s.recv(0.05)
                except AssertionError:
                    continue
                s.answer(body)
                got += 1
        self.assertEqual(got, n)

    def test_canary_and_alias_traffic_show_as_routed_and_as_addressed(self):
        stable = self.peer(register="obs-checkout")
        canary = self.peer(register="obs-checkout-canary")
        client = self.peer(name="obs-ui")
        ids = [client.request("obs-checkout", "pay")["msg_id"] for _ in range(10)]
        ids += [client.request("obs-shop", "pay")["msg_id"] for _ in range(4)]
        self.answer_all([stable, canary], len(ids))
        answered = {client.recv(2 * bp.SLOW)[1]["correlation_id"] for _ in ids}
        self.assertEqual(answered, set(ids))
        stable_s = series_of(client, "obs-checkout", "pay")
        canary_s = series_of(client, "obs-checkout-canary", "pay")
        total_canary = sum(s["requests"] for s in canary_s.values())
        self.assertGreater(total_canary, 0, canary_s)
        self.assertEqual(total_canary + sum(s["requests"] for s in stable_s.values()), 14)
        # as addressed: the client wrote obs-checkout or obs-shop, never the canary's name
        dsts = {d for d, _ in list(stable_s) + list(canary_s)}
        self.assertEqual(dsts, {"obs-checkout", "obs-shop"}, (stable_s, canary_s))
        shop = sum(s["requests"] for (d, _), s in list(stable_s.items()) + list(canary_s.items())
                   if d == "obs-shop")
        self.assertEqual(shop, 4)


DENY_POLICY = """
local policy = require "smartshop.policy"
local deny = require "smartshop.rules.deny"
policy.use { deny.new { action = { obs_forbidden = "not on this bus" } } }
"""


class RefusalsLoggedTest(bp.PolicyTestCase):
    POLICY = DENY_POLICY

    def test_no_such_service_and_denied_are_logged(self):
        client = self.peer(name="obs-c6")
        m = client.request("obs-no-one", "look")
        self.expectError(client, "no_such_service", correlation_id=m["msg_id"])
        svc = self.peer(register="obs-guarded")
        m = client.request("obs-guarded", "obs_forbidden")
        self.expectError(client, "denied", correlation_id=m["msg_id"])
        self.assertTrue(self.broker.wait_for_log(
            r"INFO +request from peer #\d+@127\.0\.0\.1 to obs-no-one \(action look\) answered "
            r"no_such_service", 3 * bp.SLOW), self.broker.log_text()[-3000:])
        self.assertTrue(self.broker.wait_for_log(
            r"INFO +request from peer \S+ to obs-guarded \(action obs_forbidden\) answered denied",
            3 * bp.SLOW), self.broker.log_text()[-3000:])
        # peers are named readably, never by libzmq's binary identity in hex
        self.assertNotRegex(self.broker.log_text(), r"peer 0x[0-9a-f]{10}\b")
        svc.close()


class PeersTest(bp.BrokerTestCase):
    def test_peers_action_and_ctl_peers_and_services(self):
        svc = self.peer(identity="obs-svc-id", register="obs-inv")
        other = self.peer(register="obs-inv")        # libzmq's own binary identity
        client = self.peer(name="obs-c7")
        m = client.request("obs-inv", "get")
        for s in (svc, other):
            try:
                _, got = s.recv(0.5)
                s.answer(got)
                break
            except AssertionError:
                pass
        client.recv_answer(m["msg_id"])
        body = client.call_broker("peers")["payload"]
        self.assertFalse(body["truncated"])
        peers = [p for p in body["peers"] if "obs-inv" in p["names"]]
        self.assertEqual(len(peers), 2, body)
        by_identity = {p["identity"]: p for p in peers}
        named = by_identity["obs-svc-id"]
        self.assertEqual(named["address"], "127.0.0.1")
        self.assertEqual(named["kind"], "remote")
        for p in peers:
            self.assertNotRegex(p["identity"], r"^0x", p)
            self.assertRegex(p["connected_at"], bp.TIMESTAMP_RE)
            self.assertRegex(p["last_seen_at"], bp.TIMESTAMP_RE)
            self.assertGreaterEqual(p["messages"]["in"], 1)
            self.assertEqual(set(p["inflight"]), {"handling", "waiting"})
        # out: two register answers and the request; in: two registers and the answer
        self.assertEqual(sum(p["messages"]["out"] for p in peers), 3, peers)
        self.assertEqual(sum(p["messages"]["in"] for p in peers), 3, peers)
        # paged by peer number (B4's rule): limit 1 walks them one at a time
        seen, after = [], None
        while True:
            page = client.call_broker("peers", payload={"limit": 1, "after": after})["payload"]
            seen += [p["peer"] for p in page["peers"]]
            if not page["truncated"]:
                break
            after = page["next"]
        self.assertEqual(seen, sorted(p["peer"] for p in body["peers"]))

        out = ctl(self.broker.endpoint, "peers")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout.splitlines()[0], r"^PEER\s+IDENTITY\s+NAMES\s+ADDRESS")
        self.assertIn("obs-svc-id", out.stdout)
        self.assertIn("127.0.0.1", out.stdout)
        out = ctl(self.broker.endpoint, "services")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout.splitlines()[0], r"ADDRESS\s+CONNECTED\s+IDLE\s+HANDLING")
        rows = [l for l in out.stdout.splitlines() if "obs-svc-id" in l]
        self.assertEqual(len(rows), 1, out.stdout)
        self.assertIn("127.0.0.1", rows[0])
        data = json.loads(ctl(self.broker.endpoint, "--json", "services").stdout)
        inv = [s for s in data["services"] if s["name"] == "obs-inv"][0]
        self.assertEqual(len(inv["connections"]), 2, inv)
        self.assertEqual((inv["requests"], inv["ok"], inv["failed"]), (1, 1, 0), inv)


class TraceTest(bp.BrokerTestCase):
    def read_lines(self, proc, n, timeout):
        lines, buf = [], ""
        deadline = time.monotonic() + timeout
        while len(lines) < n and time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536).decode()
                if not chunk:
                    break
                buf += chunk
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    lines.append(line)
        return lines

    def test_ctl_trace_shows_one_flow_requests_answers_and_errors(self):
        svc = self.peer(register="obs-traced")
        noise = self.peer(register="obs-noise")
        client = self.peer(name="obs-c8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSHOP_")}
        proc = subprocess.Popen([ctl_path(), "--endpoint", self.broker.endpoint, "--json", "trace",
                                 "obs-traced"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        try:
            # the trace is on once the broker answers it: its stderr says so
            deadline = time.monotonic() + 5 * bp.SLOW
            said = b""
            while b"tracing" not in said and time.monotonic() < deadline:
                r, _, _ = select.select([proc.stderr], [], [], 0.1)
                if r:
                    said += os.read(proc.stderr.fileno(), 4096)
            self.assertIn(b"tracing", said)
            m = client.request("obs-traced", "price", payload={"sku": "A1"})
            _, got = svc.recv()
            svc.answer(got, payload={"price": 3})
            client.recv_answer(m["msg_id"])
            n = client.request("obs-noise", "other")          # not this flow: not shown
            _, got = noise.recv()
            noise.answer(got)
            client.recv_answer(n["msg_id"])
            e = client.request("obs-traced", "price", payload={"sku": "B2"})
            _, got = svc.recv()
            svc.answer(got, type="error", payload={"code": "unknown_sku", "message": "B2?"})
            client.recv_answer(e["msg_id"])
            lines = self.read_lines(proc, 4, 5 * bp.SLOW)
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()
            proc.stderr.close()
        copies = [json.loads(l) for l in lines]
        self.assertEqual([c["kind"] for c in copies], ["request", "response", "request", "error"],
                         lines)
        self.assertTrue(all(c["service"] == "obs-traced" for c in copies), lines)
        self.assertEqual(copies[0]["message"]["payload"], {"sku": "A1"})
        self.assertEqual(copies[1]["message"]["payload"], {"price": 3})
        self.assertEqual(copies[1]["correlation_id"], m["msg_id"])
        self.assertGreaterEqual(copies[1]["latency_ms"], 0)
        self.assertEqual(copies[3]["code"], "unknown_sku")

    def test_trace_filters_by_code_and_samples_when_busy(self):
        tracer = self.peer(name="obs-tracer")
        ok = tracer.call_broker("trace", payload={"code": "no_such_service", "rate": 5})["payload"]
        self.assertEqual(ok["status"], "ok", ok)
        self.assertEqual((ok["kinds"], ok["rate"], ok["code"]), (["error"], 5, "no_such_service"))
        client = self.peer(name="obs-c9")
        for i in range(40):
            client.request("obs-ghost-%d" % i, "x")
        for _ in range(40):
            client.recv()
        got = []
        while True:
            try:
                _, body = tracer.recv(0.5 * bp.SLOW)
            except AssertionError:
                break
            got.append(body)
        self.assertTrue(all(b["action"] == "trace" and b["src"] == "broker" for b in got), got)
        self.assertGreaterEqual(len(got), 1)
        self.assertLessEqual(len(got), 10, "the rate bounds the copies")   # two windows at most
        self.assertTrue(all(b["payload"]["code"] == "no_such_service" for b in got))
        time.sleep(1.1)
        client.request("obs-ghost-last", "x")
        client.recv()
        _, last = tracer.recv(2 * bp.SLOW)
        self.assertGreater(last["payload"].get("skipped", 0), 0, last)
        bad = tracer.call_broker("trace", payload={"kinds": ["everything"]})["payload"]
        self.assertEqual(bad["status"], "error", bad)
        self.assertTrue(tracer.call_broker("untrace")["payload"]["was_tracing"])


class DeadLetterShowTest(bp.BrokerTestCase):
    def test_a_dead_letter_is_shown_with_its_message(self):
        client = self.peer(name="obs-c10")
        m = client.request("obs-missing", "order", payload={"sku": "Z9", "qty": 2})
        self.expectError(client, "no_such_service", correlation_id=m["msg_id"])
        letters = client.call_broker("dead_letters")["payload"]["dead_letters"]
        letter = [d for d in letters if d["msg_id"] == m["msg_id"]][0]
        one = client.call_broker("dead_letter", payload={"id": letter["id"]})["payload"]
        self.assertEqual(one["status"], "ok", one)
        self.assertEqual(one["dead_letter"]["message"]["payload"], {"sku": "Z9", "qty": 2})
        out = ctl(self.broker.endpoint, "dead-letters", "show", str(letter["id"]))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("no_such_service", out.stdout)
        self.assertIn('"sku": "Z9"', out.stdout)
        out = ctl(self.broker.endpoint, "dead-letters", "show", "999999")
        self.assertEqual(out.returncode, 1, out.stdout)
        out = ctl(self.broker.endpoint, "dead-letters", "show")
        self.assertEqual(out.returncode, 2, out.stdout)


# The journal's side: the broker in a mount namespace of its own where
# /run/systemd/journal/socket is ours, its stderr the stream
# $JOURNAL_STREAM names, as systemd starts it.
JOURNAL_SCRIPT = r"""
import json, os, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import brokerproc as bp
os.makedirs("/run/systemd/journal", exist_ok=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
sock.settimeout(0.2)
log = open(sys.argv[2], "wb")
st = os.fstat(log.fileno())
env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
port = bp.free_port()
proc = subprocess.Popen([bp.broker_path(), "--endpoint", "tcp://127.0.0.1:%d" % port,
                         "--policy", "", "--services", ""], stdout=log, stderr=log, env=env)
entries = []
def drain(until):
    while time.monotonic() < until:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        entries.append(dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l))
drain(time.monotonic() + 1.0 * bp.SLOW)
p = bp.Peer("tcp://127.0.0.1:%d" % port, name="jr-client")
p.register("jr-svc")
m = p.request("jr-nobody", "look", src="jr-svc")
p.recv_answer(m["msg_id"])
drain(time.monotonic() + 1.5 * bp.SLOW)
p.close()
proc.terminate()
proc.wait(5)
print(json.dumps(entries))
"""


class JournalFieldsTest(unittest.TestCase):
    def test_lines_under_journald_carry_peer_service_and_code(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1) for a journal socket of our own")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("cannot make a mount namespace here: %s" % probe.stderr.decode())
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "broker.log")
            script = os.path.join(d, "journal.py")
            with open(script, "w") as f:
                f.write(JOURNAL_SCRIPT)
            out = subprocess.run(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs tmpfs /run/systemd 2>/dev/null || mount -t tmpfs tmpfs /run; '
                 'exec "$@"', "sh", bp.PYTHON, script, os.path.dirname(os.path.abspath(__file__)),
                 log], capture_output=True, text=True, timeout=30 * bp.SLOW)
            self.assertEqual(out.returncode, 0, out.stderr)
            entries = json.loads(out.stdout)
            with open(log) as f:
                stderr_text = f.read()
        messages = [e.get("MESSAGE", "") for e in entries]
        self.assertTrue(any("ready: listening" in m for m in messages), messages)
        self.assertTrue(all(e.get("SYSLOG_IDENTIFIER") == "smartshop-broker" for e in entries))
        reg = [e for e in entries if e.get("MESSAGE", "").startswith("registered jr-svc")]
        self.assertEqual(len(reg), 1, entries)
        self.assertEqual(reg[0]["SERVICE"], "jr-svc")
        self.assertEqual(reg[0]["PRIORITY"], "6")
        self.assertRegex(reg[0]["PEER"], r"^#\d+")
        refused = [e for e in entries if e.get("CODE") == "no_such_service"]
        self.assertEqual(len(refused), 1, entries)
        self.assertEqual(refused[0]["SERVICE"], "jr-nobody")
        self.assertIn("answered no_such_service", refused[0]["MESSAGE"])
        # what went to the journal went nowhere else
        self.assertNotIn("ready: listening", stderr_text)


if __name__ == "__main__":
    bp.main()
