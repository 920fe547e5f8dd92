"""smartshop-policy, the policy test bench (docs/policies.md, "Edit, test,
save"; man/smartshop-policy.1.md): every shipped policy run offline
against a recorded file (tests/policy_bench/traffic.jsonl), each decision
checked, and the exit codes CI relies on.

The program is the one built beside the broker ($SMARTSHOP_BROKER's
directory), from the broker's own policy.c/sandbox.c.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402
from brokerproc import REPO_ROOT, SLOW, broker_path  # noqa: E402

BENCH = os.path.join(os.path.dirname(broker_path()), "smartshop-policy")
CTL = os.environ.get("SMARTSHOP_CTL") or os.path.join(os.path.dirname(broker_path()), "smartshop-ctl")
TRAFFIC = os.path.join(REPO_ROOT, "tests", "policy_bench", "traffic.jsonl")
EXAMPLES = os.path.join(REPO_ROOT, "policies", "examples")
LINE_RE = re.compile(r"^(\d+): (\S+): (\w+) (\S+) -> (\S+)(?: (\S+))?: (.*)$")


def bench(*args, stdin=None):
    """Runs the bench; returns (exit code, {msg_id: decision}, stdout, stderr)."""
    r = subprocess.run([BENCH, *args], capture_output=True, text=True, input=stdin,
                       timeout=30 * SLOW, cwd=REPO_ROOT)
    decisions = {}
    for line in r.stdout.splitlines():
        m = LINE_RE.match(line)
        if m:
            decisions[m.group(2)] = m.group(7)
    return r.returncode, decisions, r.stdout, r.stderr


def example(name):
    return os.path.join(EXAMPLES, name)


class ShippedPolicies(unittest.TestCase):
    """Each shipped policy against the same recording: what it decides."""

    def run_ok(self, policy):
        rc, d, out, err = bench(policy, TRAFFIC)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("0 hook failures", out)
        self.assertEqual(len(d), 76, out)         # every message of the recording
        return d

    def test_routing_lua_passes_everything(self):
        d = self.run_ok(os.path.join(REPO_ROOT, "policies", "routing.lua"))
        self.assertEqual(set(d.values()), {"pass"})

    def test_deny_list(self):
        d = self.run_ok(example("deny_list.lua"))
        self.assertEqual(d["r001"], 'refuse denied "this client is retired: use catalog-api"')
        self.assertEqual(d["r002"], 'refuse denied "not on this bus"')
        self.assertEqual(d["r003"], 'refuse denied "debug actions are off in production"')
        self.assertEqual(d["r004"], "pass")

    def test_acl(self):
        d = self.run_ok(example("acl.lua"))
        self.assertEqual(d["r004"], "pass")                      # stock: anyone
        self.assertTrue(d["r005"].startswith("refuse denied"), d["r005"])  # web restock
        self.assertEqual(d["r006"], "pass")                      # warehouse restock
        self.assertEqual(d["r008"], "pass")                      # payment-service refund
        self.assertTrue(d["r009"].startswith("refuse denied"), d["r009"])
        self.assertEqual(d["r010"], "pass")                      # ledger *, anyone

    def test_alias(self):
        d = self.run_ok(example("alias.lua"))
        self.assertEqual(d["r004"], "route inventory-v2")
        self.assertEqual(d["r007"], "route accounts")
        self.assertEqual(d["r011"], "pass")

    def test_affinity(self):
        d = self.run_ok(example("affinity.lua"))
        carts = {k: d[k] for k in ("r011", "r012", "r013", "r014", "r015", "r016")}
        for v in carts.values():
            self.assertRegex(v, r"^route cart cart-[abc]$")
        # the same cart_id, the same instance (c-1: r011 r013 r016; c-2: r012 r015)
        self.assertEqual(carts["r011"], carts["r013"])
        self.assertEqual(carts["r011"], carts["r016"])
        self.assertEqual(carts["r012"], carts["r015"])
        self.assertEqual(d["r017"], "pass")                      # no cart_id: round-robin
        self.assertEqual(d["r072"], carts["r011"])               # an event with c-1

    def test_canary_counted(self):
        d = self.run_ok(example("canary.lua"))
        checkout = [d["r%03d" % i] for i in range(18, 38)]
        self.assertEqual(checkout.count("route checkout-canary"), 2, checkout)
        self.assertEqual(checkout.count("pass"), 18)

    def test_least_loaded(self):
        d = self.run_ok(example("least_loaded.lua"))
        self.assertEqual(d["r038"], "route work work-2")         # load 0 of 4, 0, 2

    def test_rate_limit(self):
        d = self.run_ok(example("rate_limit.lua"))
        flood = [d["r%03d" % i] for i in range(46, 71)]          # 25 in one ms
        self.assertEqual(flood.count("pass"), 20, flood)
        self.assertEqual(flood[20:], ['refuse denied "rate limit"'] * 5)

    def test_composed_five_rules(self):
        d = self.run_ok(example("composed.lua"))
        self.assertEqual(d["r001"], 'refuse denied "this client is retired: use catalog-api"')
        self.assertEqual(d["r041"], "pass")
        self.assertEqual(d["r042"], 'refuse bad_payload "orders create: field \'qty\' must be at least 1"')
        self.assertEqual(d["r043"], 'refuse bad_payload "orders create: field \'qty\' is required"')
        self.assertEqual(d["r044"], 'refuse bad_payload "orders create: field \'qty\' must be an integer"')
        self.assertEqual(d["r045"],
                         'refuse bad_payload "orders create: field \'sku\' must be at most 32 characters"')
        # the breaker: five bad outcomes open it; after open_ms one probe
        # passes, the next still goes to the fallback; an ok closes it
        self.assertEqual(d["r073"], "route payments-fallback")
        self.assertEqual(d["r074"], "pass")
        self.assertEqual(d["r075"], "route payments-fallback")
        self.assertEqual(d["r077"], "pass")


class ExitCodes(unittest.TestCase):
    def write(self, text, suffix=".lua"):
        f = tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_against_the_live_policy_prints_the_differences(self):
        rc, _, out, _ = bench("--against", os.path.join(REPO_ROOT, "policies", "routing.lua"),
                              example("deny_list.lua"), TRAFFIC)
        self.assertEqual(rc, 1, out)
        self.assertIn("3 decisions differ", out)
        self.assertIn("  - pass\n  + refuse denied \"not on this bus\"", out)
        rc, _, out, _ = bench("--against", example("deny_list.lua"), example("deny_list.lua"), TRAFFIC)
        self.assertEqual(rc, 0, out)
        self.assertIn("0 decisions differ", out)

    def test_expectations_in_the_recording(self):
        rec = self.write(
            '{"msg":{"type":"request","msg_id":"a","src":"web","dst":"x","action":"drop_all_tables"},'
            '"expect":"refuse denied"}\n'
            '{"msg":{"type":"request","msg_id":"b","src":"web","dst":"x","action":"ok"},"expect":"pass"}\n',
            ".jsonl")
        rc, _, out, _ = bench(example("deny_list.lua"), rec)
        self.assertEqual(rc, 0, out)
        rc, _, out, _ = bench(example("alias.lua"), rec)      # alias does not refuse it
        self.assertEqual(rc, 1, out)
        self.assertIn("1: expected: refuse denied", out)
        self.assertIn("1 expectations not met", out)

    def test_a_failing_hook_is_exit_1(self):
        pol = self.write("function filter(msg) if msg.action == 'boom' then error('kaput') end end\n")
        rec = self.write('{"type":"request","msg_id":"a","src":"web","dst":"x","action":"boom"}\n'
                         '{"type":"request","msg_id":"b","src":"web","dst":"x","action":"fine"}\n', ".jsonl")
        rc, d, out, _ = bench(pol, rec)
        self.assertEqual(rc, 1, out)
        self.assertTrue(d["a"].startswith('fail "'), d)
        self.assertIn("kaput", d["a"])
        self.assertEqual(d["b"], "pass")

    def test_a_refusal_code_not_for_clients_fails_the_hook(self):
        pol = self.write("function filter(msg) return false, 'no', 'internal' end\n")
        rec = self.write('{"type":"request","msg_id":"a","src":"web","dst":"x","action":"y"}\n', ".jsonl")
        rc, d, out, _ = bench(pol, rec)
        self.assertEqual(rc, 1, out)
        self.assertIn("unknown code 'internal'", d["a"])

    def test_a_rewrite_is_shown_then_routed(self):
        pol = self.write("function filter(msg) local t = msg:table() t.action = 'v2' return t end\n"
                         "function route(msg) if msg.action == 'v2' then return 'svc-v2' end end\n")
        rec = self.write('{"type":"request","msg_id":"a","src":"web","dst":"svc","action":"v1"}\n', ".jsonl")
        rc, d, out, _ = bench(pol, rec)
        self.assertEqual(rc, 0, out)
        self.assertRegex(d["a"], r'^rewrite \{.*"action":"v2".*\} then route svc-v2$')

    def test_a_policy_that_does_not_load_is_exit_2(self):
        pol = self.write("local deny = require 'smartshop.rules.deny'\n"
                         "require('smartshop.policy').use { deny.new { sorce = {'x'} } }\n")
        rc, _, out, err = bench(pol, TRAFFIC)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("does not load", err)
        self.assertIn("sorce", err)

    def test_a_bad_recording_is_exit_2(self):
        rec = self.write('{"type":"request","msg_id":"a","src":"web","dst":"x"}\nnot json\n', ".jsonl")
        rc, _, out, err = bench(example("deny_list.lua"), rec)
        self.assertEqual(rc, 2, out + err)
        self.assertIn(":2: not a JSON object", err)
        rc, _, _, err = bench(example("deny_list.lua"), "/nonexistent.jsonl")
        self.assertEqual(rc, 2)
        rc, _, _, err = bench("--bogus")
        self.assertEqual(rc, 2)

    def test_help(self):
        r = subprocess.run([BENCH, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--against", r.stdout)


class LiveRecording(bp.PolicyTestCase):
    """smartshop-ctl record on a live broker running deny_list.lua, then
    the bench on what it wrote: the same decisions offline."""

    with open(os.path.join(EXAMPLES, "deny_list.lua")) as f:
        POLICY = f.read()

    def record(self, *extra):
        out = os.path.join(self.tmp, "rec-%d.jsonl" % time.monotonic_ns())
        err = open(out + ".err", "w+")
        self.addCleanup(err.close)
        proc = subprocess.Popen([CTL, "-e", self.broker.endpoint, "record", out, *extra],
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        # recording once it says so: the broker took its trace
        def started():
            with open(out + ".err") as f:
                return "recording" in f.read()
        self.assertTrue(bp.wait_until(started, 5 * SLOW), "record did not start")
        proc.err_path = out + ".err"
        return proc, out

    def finished(self, proc):
        proc.wait(timeout=10 * SLOW)
        with open(proc.err_path) as f:
            return f.read()

    def traffic(self, orders, web):
        """list (answered ok), drop_all_tables (refused live), an error answer, an event."""
        sent = []
        m = web.request("orders", "list", {"page": 1})
        _, req = orders.recv()
        orders.answer(req, payload={"items": []})
        web.recv_answer(m["msg_id"])
        sent.append(m["msg_id"])
        m = web.request("orders", "drop_all_tables", {})
        self.expectError(web, "denied", correlation_id=m["msg_id"])
        sent.append(m["msg_id"])
        m = web.request("orders", "get", {"id": 7})
        _, req = orders.recv()
        orders.answer(req, type="error", payload={"code": "not_found", "message": "no 7"})
        web.recv_answer(m["msg_id"])
        sent.append(m["msg_id"])
        e = web.send(bp.msg("event", "web", "orders", "touched", payload={"id": 7}))
        orders.recv()
        sent.append(e["msg_id"])
        return sent

    def lines(self, path):
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_record_then_replay(self):
        orders = self.peer(identity="orders-1", register="orders")
        web = self.peer(identity="web-1", register="web")
        proc, out = self.record("--seconds", str(int(4 * SLOW)))
        sent = self.traffic(orders, web)
        err = self.finished(proc)
        self.assertEqual(proc.returncode, 0, err)
        lines = self.lines(out)
        self.assertEqual(lines[0]["services"]["orders"][0]["id"], "orders-1", lines[0])
        msgs = [l["msg"] for l in lines if "msg" in l]
        self.assertEqual([m["msg_id"] for m in msgs], sent, lines)
        self.assertEqual(msgs[0]["payload"], {"page": 1})
        self.assertEqual([l["from"]["names"] for l in lines if "msg" in l], [["web"]] * 4)
        outcomes = [l["outcome"] for l in lines if "outcome" in l]
        self.assertEqual([(o["service"], o["outcome"], o.get("code")) for o in outcomes],
                         [("orders", "ok", None), ("orders", "error", "not_found")], lines)
        # offline, the same policy decides as the broker did
        rc, d, stdout, _ = bench(example("deny_list.lua"), out)
        self.assertEqual(rc, 0, stdout)
        self.assertEqual(d[sent[0]], "pass")
        self.assertEqual(d[sent[1]], 'refuse denied "not on this bus"')
        self.assertEqual(d[sent[3]], "pass")
        # every shipped policy runs on it
        for name in sorted(os.listdir(EXAMPLES)):
            rc, _, stdout, _ = bench(example(name), out)
            self.assertEqual(rc, 0, name + ": " + stdout)

    def test_every_example_decides_on_a_live_recording(self):
        """Traffic that each shipped example decides on, recorded live (where
        deny_list.lua runs), then every example over the file."""
        names = ["inventory", "inventory-v2", "ledger", "checkout", "work", "orders"]
        svc = {n: self.peer(identity=n + "-9", register=n) for n in names}
        carts = [self.peer(identity="cart-%s" % x, register="cart") for x in "abc"]
        web = self.peer(identity="web-9", register="web")
        warehouse = self.peer(identity="warehouse-9", register="warehouse")
        proc, rec = self.record("--seconds", str(int(4 * SLOW)))

        def serve(client, dst, action, payload, peers):
            m = client.request(dst, action, payload)
            poller_peers = {p.sock: p for p in peers}
            poller = zmq.Poller()
            for p in peers:
                poller.register(p.sock, zmq.POLLIN)
            events = dict(poller.poll(int(3000 * SLOW)))
            self.assertTrue(events, "%s %s reached no instance" % (dst, action))
            inst = poller_peers[next(iter(events))]
            _, req = inst.recv()
            inst.answer(req, payload={"by": inst.name})
            client.recv_answer(m["msg_id"])
            return m["msg_id"]

        ids = {
            "inventory": serve(web, "inventory", "stock", {"sku": "a"}, [svc["inventory"]]),
            "restock": serve(web, "inventory", "restock", {"sku": "a"}, [svc["inventory"]]),
            "restock_ok": serve(warehouse, "inventory", "restock", {"sku": "a"}, [svc["inventory"]]),
            "refund": serve(web, "ledger", "refund", {}, [svc["ledger"]]),
            "checkout": serve(web, "checkout", "pay", {}, [svc["checkout"]]),
            "work": serve(web, "work", "run", {}, [svc["work"]]),
            "cart1": serve(web, "cart", "add", {"cart_id": "c-1"}, carts),
            "cart2": serve(web, "cart", "add", {"cart_id": "c-2"}, carts),
            "cart1b": serve(web, "cart", "add", {"cart_id": "c-1"}, carts),
            "create": serve(web, "orders", "create", {"sku": "a", "qty": 0}, [svc["orders"]]),
        }
        err = self.finished(proc)
        self.assertEqual(proc.returncode, 0, err)
        msgs = [l["msg"]["msg_id"] for l in self.lines(rec) if "msg" in l]
        self.assertEqual(msgs, list(ids.values()))
        decided = {}
        for name in sorted(os.listdir(EXAMPLES)):
            rc, d, out, _ = bench(example(name), rec)
            self.assertEqual(rc, 0, name + ": " + out)
            self.assertEqual(set(d), set(ids.values()), name + ": " + out)
            decided[name] = {k: d[v] for k, v in ids.items()}
        self.assertEqual(set(decided["deny_list.lua"].values()), {"pass"})
        self.assertEqual(set(decided["rate_limit.lua"].values()), {"pass"})
        self.assertEqual(decided["alias.lua"]["inventory"], "route inventory-v2")
        self.assertEqual(decided["acl.lua"]["restock"], 'refuse denied "web may not call inventory restock"')
        self.assertEqual(decided["acl.lua"]["restock_ok"], "pass")
        self.assertEqual(decided["acl.lua"]["refund"], 'refuse denied "web may not call ledger refund"')
        self.assertEqual(decided["acl.lua"]["inventory"], "pass")
        a = decided["affinity.lua"]
        self.assertRegex(a["cart1"], r"^route cart \S+$")
        self.assertEqual(a["cart1"], a["cart1b"], "the same cart, the same instance")
        self.assertEqual(a["work"], "pass")
        self.assertRegex(decided["least_loaded.lua"]["work"], r"^route work \S+$")
        self.assertEqual(decided["canary.lua"]["checkout"], "pass", "no canary up")
        c = decided["composed.lua"]
        self.assertEqual(c.pop("create"),
                         'refuse bad_payload "orders create: field \'qty\' must be at least 1"')
        self.assertEqual(set(c.values()), {"pass"})

    def test_edit_test_save(self):
        """docs/policies.md, "Edit, test, save", step by step on the live broker."""
        orders = self.peer(identity="orders-3", register="orders")
        web = self.peer(identity="web-3", register="web")
        # 1. record
        proc, rec = self.record("--seconds", str(int(3 * SLOW)))
        created = []
        for qty in (1, 0, 5):
            m = web.request("orders", "create", {"sku": "a", "qty": qty})
            _, req = orders.recv()
            orders.answer(req, payload={"ok": True})
            web.recv_answer(m["msg_id"])
            created.append(m["msg_id"])
        err = self.finished(proc)
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual([l["msg"]["msg_id"] for l in self.lines(rec) if "msg" in l], created)
        # 2. edit a copy: a schema rule added to the live policy's list
        new = os.path.join(self.tmp, "new.lua")
        with open(self.policy) as f:
            text = f.read()
        self.assertIn("policy.use {\n", text)
        text = ('local schema = require "smartshop.rules.schema"\n' + text).replace(
            "policy.use {\n",
            "policy.use {\n  schema.new { service = \"orders\", actions = {\n"
            "    create = { qty = { type = \"integer\", min = 1 } } } },\n", 1)
        with open(new, "w") as f:
            f.write(text)
        luac = shutil.which("luac5.4")
        if luac:
            subprocess.run([luac, "-p", new], check=True)
        # 3. test it against the live policy: only the qty 0 create differs
        rc, _, out, _ = bench("--against", self.policy, new, rec)
        self.assertEqual(rc, 1, out)
        self.assertIn("1 decisions differ", out)
        self.assertIn("%s: request web -> orders create\n  - pass\n"
                      "  + refuse bad_payload \"orders create: field 'qty' must be at least 1\"\n"
                      % created[1], out)
        # 4. save by renaming over the live file: the broker loads it
        with open(self.policy) as f:
            live = f.read()
        self.addCleanup(self.restore, live)
        mark = len(self.broker.log_text())
        tmp = os.path.join(self.tmp, ".policy.lua.tmp")
        shutil.copy(new, tmp)
        os.rename(tmp, self.policy)
        self.assertTrue(self.broker.wait_for_log(r"policy .* loaded \(hooks: filter\)", 5 * SLOW, mark),
                        self.broker.log_text()[mark:])
        m = web.request("orders", "create", {"sku": "a", "qty": 0})
        body = self.expectError(web, "bad_payload", correlation_id=m["msg_id"])
        self.assertEqual(body["payload"]["message"], "orders create: field 'qty' must be at least 1")
        orders.expect_nothing(0.1)
        stats = web.call_broker("stats")["payload"]
        self.assertGreaterEqual(stats["errors"].get("bad_payload", 0), 1, stats)

    def restore(self, text):
        """5. roll back: the previous version put back the same way."""
        mark = len(self.broker.log_text())
        tmp = os.path.join(self.tmp, ".policy.lua.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.policy)
        self.assertTrue(self.broker.wait_for_log(r"policy .* loaded", 5 * SLOW, mark))

    def test_record_is_sampled(self):
        """--rate 5: a busy broker is sampled, the rest left out (B5)."""
        orders = self.peer(identity="orders-4", register="orders")
        web = self.peer(identity="web-4", register="web")
        secs = int(2 * SLOW)
        proc, rec = self.record("--rate", "5", "--seconds", str(secs))
        for i in range(40):
            m = web.request("orders", "list", {"i": i})
            _, req = orders.recv()
            orders.answer(req, payload={"items": []})
            web.recv_answer(m["msg_id"])
        err = self.finished(proc)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("at most 5 a second", err)
        copies = [l for l in self.lines(rec) if "msg" in l or "outcome" in l]
        self.assertGreaterEqual(len(copies), 1, err)
        # 80 copies matched (40 requests, 40 answers); at most 5 a second were sent
        self.assertLessEqual(len(copies), 5 * (secs + 1), copies)
        # what was kept replays
        rc, _, out, _ = bench(example("deny_list.lua"), rec)
        self.assertEqual(rc, 0, out)

    def test_record_without_payloads(self):
        orders = self.peer(identity="orders-2", register="orders")
        web = self.peer(identity="web-2", register="web")
        proc, out = self.record("--no-payloads", "--limit", "3")
        self.traffic(orders, web)
        err = self.finished(proc)                       # --limit 3: stops by itself
        self.assertEqual(proc.returncode, 0, err)
        lines = self.lines(out)
        self.assertEqual(len(lines), 4, lines)        # the instances and 3 lines
        for line in lines:
            if "msg" in line:
                self.assertNotIn("payload", line["msg"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
