#!/usr/bin/python3
"""smartshop-ctl against the real broker: every subcommand, --json output,
exit codes (0 ok, 1 an error reply, 2 usage, 3 unreachable), watch, and
CURVE keys.

    /usr/bin/python3 tests/ops/test_ctl.py

The broker is $SMARTSHOP_BROKER (default build/smartshop-broker), the tool
$SMARTSHOP_CTL (default smartshop-ctl beside the broker). Uses
tests/integration/brokerproc.py (stdlib and Debian's python3-zmq).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

import zmq  # noqa: E402


def ctl_path():
    env = os.environ.get("SMARTSHOP_CTL")
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.dirname(bp.broker_path()), "smartshop-ctl")


def ctl(*args, endpoint=None, input=None, timeout=15, env=None):
    """Run smartshop-ctl; return CompletedProcess (text)."""
    cmd = [ctl_path()]
    if endpoint:
        cmd += ["--endpoint", endpoint]
    cmd += list(args)
    e = dict(os.environ)
    e.pop("SMARTSHOP_ENDPOINT", None)
    e.pop("SMARTSHOP_SERVER_KEY", None)
    e.pop("SMARTSHOP_KEY", None)
    if env:
        e.update(env)
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          env=e, stdin=None if input is not None else subprocess.DEVNULL)


class Service(threading.Thread):
    """A Python service on its own thread: `echo` echoes, `fail` answers an
    error, `slow` never answers, events are collected."""

    def __init__(self, endpoint, name):
        super().__init__(daemon=True)
        self.endpoint, self.name = endpoint, name
        self.ready = threading.Event()
        self.halt = threading.Event()
        self.events = []
        self.requests = []

    def run(self):
        p = bp.Peer(self.endpoint, name=self.name)
        try:
            p.register(self.name)
            self.ready.set()
            while not self.halt.is_set():
                frames = p.recv_raw(0.05)
                if frames is None:
                    continue
                body = json.loads(frames[-1])
                if body.get("type") == "event":
                    self.events.append(body)
                if body.get("type") != "request":
                    continue
                self.requests.append(body)
                action = body.get("action")
                if action == "echo":
                    p.answer(body, payload=body.get("payload"))
                elif action == "nasty":
                    p.answer(body, payload={"code": "bad\x1b[31m",
                                            "message": "\x1b]0;owned\x07 \x7f \u009b2J"},
                             type="error")
                elif action == "fail":
                    p.answer(body, payload={"code": "out_of_stock", "message": "none left"},
                             type="error")
                # "slow": no answer
        finally:
            p.close()

    def __enter__(self):
        self.start()
        if not self.ready.wait(5):
            raise AssertionError("service %s did not register" % self.name)
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join(5)


class CtlTest(bp.BrokerTestCase):
    """One broker (core only) for the class; a policy file so reload works."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ctl_path()):
            raise AssertionError("smartshop-ctl not found: %s (build it, or set SMARTSHOP_CTL)"
                                 % ctl_path())
        cls.dir = tempfile.TemporaryDirectory()
        cls.policy = os.path.join(cls.dir.name, "routing.lua")
        with open(cls.policy, "w") as f:
            f.write("-- no hooks\n")
        cls.BROKER_ARGS = ("--policy", cls.policy)
        super().setUpClass()
        cls.ep = cls.broker.endpoint

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.dir.cleanup()

    def run_ctl(self, *args, **kw):
        return ctl(*args, endpoint=self.ep, **kw)

    def assertExit(self, out, code):
        self.assertEqual(out.returncode, code, "exit %s, wanted %s\nstdout: %s\nstderr: %s"
                         % (out.returncode, code, out.stdout, out.stderr))

    def json_of(self, out):
        self.assertExit(out, 0)
        lines = out.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, "--json prints one line: %r" % out.stdout)
        return json.loads(lines[0])

    # --- ping, services, stats, metrics ---

    def test_ping(self):
        out = self.run_ctl("ping")
        self.assertExit(out, 0)
        self.assertIn("answered", out.stdout)
        self.assertEqual(self.json_of(self.run_ctl("--json", "ping"))["status"], "ok")

    def test_endpoint_from_environment(self):
        out = ctl("--json", "ping", env={"SMARTSHOP_ENDPOINT": self.ep})
        self.assertEqual(self.json_of(out)["status"], "ok")

    def test_services_table_and_json(self):
        a1 = self.peer(register="ctl-svc-a")
        a2 = self.peer(register="ctl-svc-a")
        b = self.peer(register="ctl-svc-b")
        out = self.run_ctl("services")
        self.assertExit(out, 0)
        lines = [l for l in out.stdout.splitlines() if not l.startswith("(")]
        self.assertRegex(lines[0], r"^SERVICE\s+INSTANCES\s+PEER\s+ADDRESS\s+CONNECTED")
        # a service's row, then one indented row per instance (its connection)
        rows = {l.split()[0]: l.split()[1] for l in lines[1:] if not l.startswith(" ")}
        self.assertEqual(rows.get("ctl-svc-a"), "2")
        self.assertEqual(rows.get("ctl-svc-b"), "1")
        # the columns line up: every INSTANCES cell ends where the header does
        self.assertEqual({len(l) for l in lines}, {len(lines[0])}, out.stdout)
        data = self.json_of(self.run_ctl("services", "--json"))
        got = {s["name"]: s["instances"] for s in data["services"]}
        self.assertEqual(got["ctl-svc-a"], 2)
        self.assertEqual(got["ctl-svc-b"], 1)
        for p in (a1, a2, b):
            p.close()

    def test_stats(self):
        out = self.run_ctl("stats")
        self.assertExit(out, 0)
        keys = [l.split()[0] for l in out.stdout.splitlines() if l.strip()]
        for key in ("uptime_ms", "peers", "services", "inflight"):
            self.assertIn(key, keys)
        # aligned: the value column starts at one offset on every line
        starts = {len(l) - len(l[len(l.split()[0]):].lstrip()) for l in out.stdout.splitlines()}
        self.assertEqual(len(starts), 1, out.stdout)
        data = self.json_of(self.run_ctl("--json", "stats"))
        self.assertIsInstance(data["uptime_ms"], int)
        self.assertIn("dropped", data)

    def test_metrics(self):
        with Service(self.ep, "ctl-metered"):
            self.assertExit(self.run_ctl("request", "ctl-metered", "echo", "{}"), 0)
        out = self.run_ctl("metrics")
        if out.returncode == 1 and "unknown_action" in out.stderr:
            self.skipTest("this broker has no metrics action")
        self.assertExit(out, 0)
        self.assertIn("ctl-metered", out.stdout)
        data = self.json_of(self.run_ctl("--json", "metrics"))
        self.assertIsInstance(data, dict)

    # --- request ---

    def test_request_prints_the_response_payload(self):
        with Service(self.ep, "ctl-echo"):
            payload = {"sku": "A-1", "qty": 3, "tags": ["x", "y"], "note": "caf\u00e9"}
            out = self.run_ctl("request", "ctl-echo", "echo", json.dumps(payload))
            self.assertExit(out, 0)
            self.assertEqual(json.loads(out.stdout), payload)   # human: indented JSON
            self.assertEqual(self.json_of(self.run_ctl("--json", "request", "ctl-echo", "echo",
                                                       json.dumps(payload))), payload)
            # the payload from stdin; options after the arguments
            out = self.run_ctl("request", "ctl-echo", "echo", "-", "--timeout", "3000",
                               input='{"from": "stdin"}')
            self.assertExit(out, 0)
            self.assertEqual(json.loads(out.stdout), {"from": "stdin"})
            # no payload: null
            out = self.run_ctl("request", "ctl-echo", "echo")
            self.assertExit(out, 0)
            self.assertEqual(out.stdout.strip(), "null")

    def test_request_to_the_broker_itself(self):
        data = json.loads(self.run_ctl("request", "broker", "ping").stdout)
        self.assertEqual(data["status"], "ok")

    def test_error_reply_exits_1(self):
        with Service(self.ep, "ctl-failing"):
            out = self.run_ctl("request", "ctl-failing", "fail", "{}")
            self.assertExit(out, 1)
            self.assertIn("out_of_stock", out.stderr)
            self.assertIn("none left", out.stderr)
            out = self.run_ctl("--json", "request", "ctl-failing", "fail")
            self.assertExit(out, 1)
            self.assertEqual(json.loads(out.stdout),
                             {"error": {"code": "out_of_stock", "message": "none left"}})

    def test_terminal_control_characters_are_not_printed(self):
        # what a service sends must not drive the operator's terminal
        with Service(self.ep, "ctl-nasty"):
            out = self.run_ctl("request", "ctl-nasty", "nasty")
            self.assertExit(out, 1)
            for ch in ("\x1b", "\x07", "\x7f", "\u009b"):
                self.assertNotIn(ch, out.stderr)
            self.assertIn("owned", out.stderr)
            out = self.run_ctl("request", "ctl-nasty", "echo", json.dumps({"t": "\x1b[2J\x7f\u009b"}))
            self.assertExit(out, 0)
            for ch in ("\x1b", "\x7f", "\u009b"):
                self.assertNotIn(ch, out.stdout)

    def test_missing_service_exits_1(self):
        out = self.run_ctl("request", "ctl-nobody-here", "anything")
        self.assertExit(out, 1)
        self.assertIn("no_such_service", out.stderr)
        out = self.run_ctl("--json", "request", "ctl-nobody-here", "anything")
        self.assertExit(out, 1)
        self.assertEqual(json.loads(out.stdout)["error"]["code"], "no_such_service")

    def test_unknown_broker_action_exits_1(self):
        out = self.run_ctl("request", "broker", "no_such_action")
        self.assertExit(out, 1)
        self.assertIn("unknown_action", out.stderr)

    def test_slow_service_exits_1_with_timeout(self):
        # the broker is up, the service does not answer in time: an error
        # (1), not an unreachable broker (3)
        with Service(self.ep, "ctl-slow"):
            t0 = time.monotonic()
            out = self.run_ctl("request", "ctl-slow", "slow", "--timeout", "300")
            self.assertExit(out, 1)
            self.assertIn("timeout", out.stderr)
            self.assertLess(time.monotonic() - t0, 5)

    # --- usage: exit 2 ---

    def test_usage_errors_exit_2(self):
        cases = [
            (),                                             # no command
            ("frobnicate",),                                # unknown command
            ("--no-such-option", "ping"),
            ("--timeout", "soon", "ping"),
            ("--timeout",),                                 # option without its value
            ("request",),                                   # DST ACTION missing
            ("request", "svc"),
            ("request", "svc", "act", "{not json"),
            ("request", "svc", "act", "{}", "extra"),
            ("replay",),
            ("replay", "twelve"),
            ("replay", "-5"),
            ("ping", "extra"),
            ("--limit", "3", "ping"),                       # --limit is for dead-letters
            ("dead-letters", "--limit", "many"),
            ("--server-key", "/nonexistent", "ping"),       # CURVE needs --key too
        ]
        for args in cases:
            with self.subTest(args=args):
                out = self.run_ctl(*args)
                self.assertExit(out, 2)
                self.assertTrue(out.stderr.strip(), "a usage error says why")
        out = ctl("--endpoint", "not-an-endpoint", "ping")
        self.assertExit(out, 2)

    def test_help_and_version(self):
        out = ctl("--help")
        self.assertExit(out, 0)
        for word in ("ping", "services", "stats", "request", "watch", "reload", "dead-letters",
                     "replay", "--json", "--endpoint", "--timeout", "--server-key", "--key",
                     "Exit codes"):
            self.assertIn(word, out.stdout)
        self.assertExit(ctl("--version"), 0)

    # --- unreachable: exit 3 ---

    def test_unreachable_broker_exits_3(self):
        port = bp.free_port()
        t0 = time.monotonic()
        out = ctl("--timeout", "300", "ping", endpoint="tcp://127.0.0.1:%d" % port)
        self.assertExit(out, 3)
        self.assertIn("tcp://127.0.0.1:%d" % port, out.stderr)
        self.assertLess(time.monotonic() - t0, 5)
        # said at once, whatever the timeout, like redis-cli
        t0 = time.monotonic()
        out = ctl("ping", endpoint="tcp://127.0.0.1:%d" % port)
        self.assertExit(out, 3)
        self.assertIn("connection refused", out.stderr)
        self.assertLess(time.monotonic() - t0, 1.5 * bp.SLOW)
        out = ctl("--json", "--timeout", "300", "services", endpoint="tcp://127.0.0.1:%d" % port)
        self.assertExit(out, 3)
        self.assertEqual(json.loads(out.stdout)["error"]["code"], "unreachable")
        for args in (("stats",), ("request", "x", "y"), ("reload",), ("dead-letters",),
                     ("replay", "1"), ("watch",)):
            with self.subTest(args=args):
                out = ctl("--timeout", "200", *args, endpoint="tcp://127.0.0.1:%d" % port)
                self.assertExit(out, 3)

    # --- reload ---

    def test_reload(self):
        out = self.run_ctl("reload")
        self.assertExit(out, 0)
        self.assertIn("policy reloaded", out.stdout)
        self.assertEqual(self.json_of(self.run_ctl("--json", "reload"))["status"], "ok")

    def test_reload_of_a_broken_policy_exits_1_and_says_where(self):
        broken = os.path.join(self.dir.name, "broken.lua")
        with open(broken, "w") as f:
            f.write("function route(msg)\n  return (\nend\n")
        with bp.Broker(args=("--policy", self.policy)) as b:
            with open(self.policy) as f:
                good = f.read()
            try:
                os.replace(broken, self.policy)   # the broker refuses it, and keeps the old
                out = ctl("reload", endpoint=b.endpoint)
                self.assertExit(out, 1)
                self.assertIn("routing.lua", out.stderr)
                out = ctl("--json", "reload", endpoint=b.endpoint)
                self.assertExit(out, 1)
                self.assertIn("routing.lua", json.loads(out.stdout)["error"]["message"])
            finally:
                with open(self.policy, "w") as f:
                    f.write(good)

    def test_reload_without_a_policy_exits_1(self):
        with bp.Broker() as b:                        # --policy ""
            out = ctl("reload", endpoint=b.endpoint)
            self.assertExit(out, 1)
            self.assertIn("without a policy", out.stderr)

    # --- dead letters and replay ---

    def test_dead_letters_and_replay(self):
        sender = self.peer(register="ctl-sender")
        ev = sender.send(bp.msg("event", "ctl-sender", "ctl-later", "restock", payload={"n": 7}))
        sender.recv(2)                              # its no_such_service error
        data = self.json_of(self.run_ctl("--json", "dead-letters"))
        self.assertGreaterEqual(data["count"], 1)
        mine = [d for d in data["dead_letters"] if d["msg_id"] == ev["msg_id"]]
        self.assertEqual(len(mine), 1, data)
        letter = mine[0]
        self.assertEqual(letter["code"], "no_such_service")
        self.assertTrue(letter["replayable"])
        out = self.run_ctl("dead-letters")
        self.assertExit(out, 0)
        self.assertIn("ID", out.stdout.splitlines()[1])
        self.assertIn(ev["msg_id"], out.stdout)
        self.assertLessEqual(len(self.json_of(self.run_ctl("--json", "dead-letters", "--limit", "1"))
                                 ["dead_letters"]), 1)
        # the service comes; the letter is replayed to it
        with Service(self.ep, "ctl-later") as later:
            out = self.run_ctl("replay", str(letter["id"]))
            self.assertExit(out, 0)
            self.assertTrue(bp.wait_until(lambda: later.events, 3), "replayed event not delivered")
            self.assertEqual(later.events[0]["payload"], {"n": 7})
            self.assertEqual(self.json_of(self.run_ctl("--json", "replay", str(letter["id"])))
                             ["status"], "ok")
        out = self.run_ctl("replay", "987654321")
        self.assertExit(out, 1)
        self.assertIn("no dead letter", out.stderr)

    # --- watch ---

    def watch(self, *args):
        proc = subprocess.Popen([ctl_path(), "--endpoint", self.ep] + list(args) + ["watch"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        return proc

    def read_lines(self, proc, want, timeout=5):
        """Lines from proc's stdout until `want` of them came (or timeout)."""
        lines, box = [], []

        def reader():
            for line in proc.stdout:
                box.append(line.rstrip("\n"))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        while len(box) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        lines.extend(box)
        return lines, t

    def wait_watching(self, proc):
        """The tool says on stderr when the broker has accepted its watch."""
        line = proc.stderr.readline()
        self.assertIn("watching", line, "watch did not start: %r" % line)

    def test_watch_prints_events_and_broadcasts(self):
        for as_json in (False, True):
            with self.subTest(json=as_json):
                proc = self.watch(*(["--json"] if as_json else []))
                try:
                    self.wait_watching(proc)
                    a = self.peer(register="ctl-pub")
                    b = self.peer(register="ctl-sub")
                    a.send(bp.msg("event", "ctl-pub", "broadcast", "price_changed",
                                  payload={"sku": "A-1", "price": 3}))
                    a.send(bp.msg("event", "ctl-pub", "ctl-sub", "restocked", payload={"qty": 5}))
                    lines, reader = self.read_lines(proc, 2)
                    self.assertEqual(len(lines), 2, "watch printed %r" % lines)
                    if as_json:
                        got = [json.loads(l) for l in lines]
                        self.assertEqual([(m["dst"], m["action"]) for m in got],
                                         [("broadcast", "price_changed"), ("ctl-sub", "restocked")])
                        self.assertEqual(got[0]["payload"], {"sku": "A-1", "price": 3})
                    else:
                        self.assertRegex(lines[0], r"broadcast\s+ctl-pub -> broadcast\s+price_changed")
                        self.assertIn('{"sku":"A-1","price":3}', lines[0])
                        self.assertRegex(lines[1], r"event\s+ctl-pub -> ctl-sub\s+restocked")
                    a.close()
                    b.close()
                finally:
                    proc.send_signal(signal.SIGINT)
                    try:
                        code = proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        code = "hung"
                    proc.stdout.close()
                    proc.stderr.close()
                self.assertEqual(code, 0, "Ctrl-C ends watch with exit 0")

    def test_watch_survives_a_broker_restart(self):
        port = bp.free_port()
        b = bp.Broker(port=port)
        proc = subprocess.Popen([ctl_path(), "--endpoint", b.endpoint, "--json", "watch"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            self.assertIn("watching", proc.stderr.readline())
            b.cleanup()
            b = bp.Broker(port=port)
            # the tool notices within about a second and watches again
            deadline = time.monotonic() + 8
            got = []

            def reader():
                for line in proc.stdout:
                    got.append(json.loads(line))
            threading.Thread(target=reader, daemon=True).start()
            p = b.peer()
            p.register("ctl-after")
            while not got and time.monotonic() < deadline:
                p.send(bp.msg("event", "ctl-after", "broadcast", "tick", payload=None))
                time.sleep(0.3)
            p.close()
            self.assertTrue(got, "no event printed after the broker restarted")
            self.assertEqual(got[0]["action"], "tick")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
            b.cleanup()
            proc.stdout.close()
            proc.stderr.close()

    # --- pub: an event to a service, a broadcast (topics: test_topics.py) ---

    def test_pub_sends_an_event_and_a_broadcast(self):
        # before, pub took a topic only: no way to send an event to a
        # service name or to "broadcast" from the shell
        svc = self.peer(register="ctl-pub-target")
        other = self.peer(register="ctl-pub-other")
        out = self.run_ctl("pub", "--to", "ctl-pub-target", "restocked", '{"qty": 5}')
        self.assertExit(out, 0)
        self.assertIn("sent to ctl-pub-target restocked", out.stdout)
        _, ev = svc.recv(2 * bp.SLOW)
        self.assertEqual((ev["type"], ev["dst"], ev["action"], ev["payload"]),
                         ("event", "ctl-pub-target", "restocked", {"qty": 5}))
        out = self.run_ctl("pub", "--to", "broadcast", "price_changed", '{"sku": "A-1"}')
        self.assertExit(out, 0)
        for p in (svc, other):
            _, ev = p.recv(2 * bp.SLOW)
            self.assertEqual((ev["dst"], ev["action"], ev["payload"]),
                             ("broadcast", "price_changed", {"sku": "A-1"}))
        # a name nobody holds: said, since the broker's refusal of an event
        # answers no request of the tool's
        out = self.run_ctl("pub", "--to", "ctl-pub-nobody", "x")
        self.assertExit(out, 0)
        self.assertIn("no service ctl-pub-nobody is registered", out.stderr)
        self.assertExit(self.run_ctl("pub", "--to", "ctl-pub-target"), 2)
        self.assertExit(self.run_ctl("--to", "ctl-pub-target", "ping"), 2)
        out = ctl("pub", "--to", "x", "y", endpoint="tcp://127.0.0.1:%d" % bp.free_port())
        self.assertExit(out, 3)

    # --- bash completion (packaging/bash-completion/smartshop-ctl) ---

    def complete(self, *words):
        """What the completion offers for `smartshop-ctl WORDS...` (the
        last word being completed)."""
        script = ('source /usr/share/bash-completion/bash_completion 2>/dev/null; source "$1"; shift; '
                  'COMP_WORDS=(smartshop-ctl "$@"); COMP_CWORD=$#; COMP_LINE="${COMP_WORDS[*]}"; '
                  'COMP_POINT=${#COMP_LINE}; _smartshop_ctl; printf "%s\\n" "${COMPREPLY[@]}"')
        path = os.path.join(bp.REPO_ROOT, "packaging", "bash-completion", "smartshop-ctl")
        env = dict(os.environ, PATH=os.path.dirname(ctl_path()) + ":" + os.environ["PATH"],
                   SMARTSHOP_ENDPOINT=self.ep)
        out = subprocess.run(["bash", "-c", script, "bash", path] + list(words), capture_output=True,
                             text=True, timeout=20, env=env)
        return set(out.stdout.split())

    def test_bash_completion_offers_every_command_and_option(self):
        if not os.path.exists("/usr/share/bash-completion/bash_completion"):
            self.skipTest("bash-completion is not installed (make deps-test)")
        usage = ctl("--help").stdout
        commands = set(re.findall(r"^  ([a-z][a-z-]+)\b", usage.split("Options:")[0], re.M))
        self.assertGreaterEqual(len(commands), 16, usage)
        self.assertEqual(commands - self.complete(""), set(), "commands not completed")
        options = set(re.findall(r"--[a-z][a-z-]+", usage)) - {"--keygen"}   # smartshop-broker's
        offered = set()
        for cmd in sorted(commands):
            offered |= self.complete(cmd, "--")
        self.assertEqual(options - offered, set(), "options not completed")
        self.assertIn("broadcast", self.complete("pub", "--to", ""))
        svc = self.peer(register="ctl-completed")
        self.assertIn("ctl-completed", self.complete("pub", "--to", "ctl-comp"))
        self.assertIn("ctl-completed", self.complete("record", "out.jsonl", "ctl-comp"))
        svc.close()

    # --- reply (a stub responder) and top (live rates per service) ---

    def test_reply_answers_every_request_until_interrupted(self):
        proc = subprocess.Popen([ctl_path(), "--endpoint", self.ep, "reply", "stub-stock", '{"left": 3}'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            p = self.peer(name="asker")
            body = None
            deadline = time.monotonic() + 10 * bp.SLOW
            while time.monotonic() < deadline:
                m = p.request("stub-stock", "count", {"sku": 9}, src="asker")
                _, body = p.recv_answer(m["msg_id"], timeout=2 * bp.SLOW)
                if body["type"] == "response":
                    break
                time.sleep(0.1)             # not registered yet: no_such_service
            self.assertEqual((body["type"], body["payload"]), ("response", {"left": 3}), body)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=5)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("asker -> stub-stock  count", out)

    def test_top_shows_requests_per_service(self):
        with Service(self.ep, "top-echo"):
            for _ in range(20):
                self.assertExit(self.run_ctl("request", "top-echo", "echo", '{"n": 1}'), 0)
            out = self.run_ctl("top", "1")
            self.assertExit(out, 0)
            self.assertIn("SERVICE", out.stdout)
            self.assertIn("P99 MS<=", out.stdout)
            self.assertRegex(out.stdout, r"top-echo\s+\d")
            self.assertExit(self.run_ctl("top", "zero"), 2)


class CurveCtlTest(unittest.TestCase):
    """--server-key and --key against a broker with CURVE on."""

    def test_curve(self):
        with tempfile.TemporaryDirectory() as d:
            for who in ("broker", "ops"):
                out = subprocess.run([bp.broker_path(), "--keygen", os.path.join(d, who)],
                                     capture_output=True, text=True, timeout=5)
                self.assertEqual(out.returncode, 0, out.stderr)
            with open(os.path.join(d, "ops.pub")) as f:
                ops_key = [l.strip() for l in f if l.strip() and not l.startswith("#")][0]
            with open(os.path.join(d, "allow"), "w") as f:
                f.write("%s\n" % ops_key)                  # may connect, registers nothing
            with bp.Broker(args=("--curve-secret-key", os.path.join(d, "broker.key"),
                                 "--curve-allow", os.path.join(d, "allow"))) as b:
                keys = ("--server-key", os.path.join(d, "broker.pub"),
                        "--key", os.path.join(d, "ops"))
                out = ctl(*keys, "--json", "ping", endpoint=b.endpoint)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(json.loads(out.stdout)["status"], "ok")
                out = ctl("--json", "services", endpoint=b.endpoint,
                          env={"SMARTSHOP_SERVER_KEY": os.path.join(d, "broker.pub"),
                               "SMARTSHOP_KEY": os.path.join(d, "ops")})
                self.assertEqual(out.returncode, 0, out.stderr)
                # plain mode against a CURVE broker: said at once -> 3
                t0 = time.monotonic()
                out = ctl("ping", endpoint=b.endpoint)
                self.assertEqual(out.returncode, 3, out.stderr)
                self.assertIn("requires CURVE", out.stderr)
                self.assertLess(time.monotonic() - t0, 2 * bp.SLOW)
                # a key not on the allow list -> 3
                subprocess.run([bp.broker_path(), "--keygen", os.path.join(d, "stranger")],
                               capture_output=True, timeout=5)
                out = ctl("--server-key", os.path.join(d, "broker.pub"),
                          "--key", os.path.join(d, "stranger"), "--timeout", "300", "ping",
                          endpoint=b.endpoint)
                self.assertEqual(out.returncode, 3, out.stderr)
                self.assertIn("CURVE", out.stderr)
                # a key file that is not one -> 2
                out = ctl("--server-key", os.path.join(d, "allow.missing"), "--key",
                          os.path.join(d, "ops"), "ping", endpoint=b.endpoint)
                self.assertEqual(out.returncode, 2, out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
