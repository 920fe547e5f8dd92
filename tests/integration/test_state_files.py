#!/usr/bin/python3
"""The state directory (docs/operations.md, "The state directory").

Dead letters and the last good policy survive kill -9; dead_letters and
replay work across the restart. A policy file that does not load at start
falls back to the last good version with a loud warning, a metric and the
versions in ping and stats; --strict-policy exits 2 instead. A corrupted
state file and a missing one are reported and the broker starts empty.
"""
import os
import re
import shutil
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

SLOW = bp.SLOW

GOOD_POLICY = '''function filter(msg)
  if msg.action == "forbidden" then return false, "not today" end
  return true
end
'''
BROKEN_POLICY = 'function filter(msg)\n  return true\n'   # no `end`


def state_written(peer, src=None):
    state = peer.call_broker("stats", src=src)["payload"]["state"]
    return state["queued"] == 0 and state["written"] > 0


class StateFilesTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smartshop-statefiles-")
        self.state = os.path.join(self.dir, "state")
        self.port = bp.free_port()
        self.brokers, self.peers = [], []

    def tearDown(self):
        for p in self.peers:
            p.close()
        for b in self.brokers:
            stopped_by_test = b.returncode is not None or b.proc.poll() is not None
            code = b.stop()
            log = b.log_text()
            b.cleanup()
            # a clean stop, sanitizers included (a kill -9 by the test aside)
            if not stopped_by_test:
                self.assertEqual(code, 0, log)
            self.assertNotRegex(log, r"Sanitizer|runtime error")
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, *args, core_only=True):
        b = bp.Broker(port=self.port, state_dir=self.state, args=args, core_only=core_only)
        self.brokers.append(b)
        return b

    def peer(self, b, register=None, **kw):
        p = b.peer(**kw)
        self.peers.append(p)
        if register:
            p.register(register)
        return p

    def kill9(self, b):
        b.proc.kill()
        b.proc.wait()

    def test_dead_letters_survive_kill_9_and_replay(self):
        b = self.start()
        sender = self.peer(b, identity=b"sender-1", name="sender")
        r = sender.request("nobody-home", "ship", payload={"order": 7}, src="sender")
        self.assertEqual(bp.error_code(sender.recv_answer(r["msg_id"])[1]), "no_such_service")
        admin = self.peer(b, name="admin")
        before = admin.call_broker("dead_letters")["payload"]["dead_letters"]
        self.assertEqual([d["msg_id"] for d in before], [r["msg_id"]])
        self.assertTrue(bp.wait_until(lambda: state_written(admin), 3 * SLOW))
        self.kill9(b)

        b2 = self.start()
        self.assertTrue(b2.wait_for_log(r"restored \d+ registration\(s\).*1 dead letter", 5 * SLOW),
                        b2.log_text())
        admin = self.peer(b2, name="admin")
        after = admin.call_broker("dead_letters")["payload"]["dead_letters"]
        self.assertEqual(after, before)     # the same id, time, code and fields
        # replay: as if its sender sent it now, once that connection is back
        svc = self.peer(b2, register="nobody-home")
        sender.call_broker("ping", src="sender")
        body = admin.call_broker("replay", {"id": before[0]["id"]})["payload"]
        self.assertEqual(body.get("status"), "ok", body)
        _, got = svc.recv(3 * SLOW)
        self.assertEqual((got["msg_id"], got["payload"]), (r["msg_id"], {"order": 7}))
        # new letters go on from the restored ids
        r2 = sender.request("nobody-else", "ship", src="sender")
        sender.recv_answer(r2["msg_id"])
        ids = [d["id"] for d in admin.call_broker("dead_letters")["payload"]["dead_letters"]]
        self.assertEqual(ids[0], before[0]["id"] + 1, ids)

    def write_policy(self, text):
        path = os.path.join(self.dir, "routing.lua")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_last_good_policy_survives_kill_9_and_runs_when_the_file_breaks(self):
        policy = self.write_policy(GOOD_POLICY)
        metrics_port = bp.free_port()
        args = ("--policy", policy, "--metrics", "tcp://127.0.0.1:%d" % metrics_port)
        b = self.start(*args)
        p = self.peer(b, name="c")
        self.assertTrue(bp.wait_until(lambda: state_written(p, "c"), 3 * SLOW))
        good = p.call_broker("ping", src="c")["payload"]["policy"]
        self.assertEqual(good["file_sha256"], good["loaded_sha256"])
        self.assertIsNone(good["stale_since"])
        self.kill9(b)
        self.write_policy(BROKEN_POLICY)

        b2 = self.start(*args)              # not exit 2: the last good version runs
        self.assertTrue(b2.wait_for_log(r"ERROR\s+POLICY FALLBACK: .*routing\.lua does not load",
                                        5 * SLOW), b2.log_text())
        p = self.peer(b2, name="c")
        for action in ("ping", "stats"):
            v = p.call_broker(action, src="c")["payload"]["policy"]
            self.assertEqual(v["loaded_sha256"], good["loaded_sha256"], v)
            self.assertNotEqual(v["file_sha256"], v["loaded_sha256"], v)
            self.assertRegex(v["stale_since"] or "", bp.TIMESTAMP_RE)
            self.assertTrue(v["fallback"], v)
        # and it is the old rules that run
        r = p.request("broker", "forbidden", src="c")
        self.assertEqual(bp.error_code(p.recv_answer(r["msg_id"])[1]), "denied")
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port,
                                      timeout=5).read().decode()
        self.assertRegex(text, r"(?m)^smartshop_policy_stale 1$")
        # fixing the file makes it current again
        self.write_policy(GOOD_POLICY + "-- fixed\n")
        self.assertEqual(p.call_broker("reload_policy", src="c")["payload"]["status"], "ok")
        v = p.call_broker("ping", src="c")["payload"]["policy"]
        self.assertIsNone(v["stale_since"], v)
        self.assertEqual(v["file_sha256"], v["loaded_sha256"])

    def test_strict_policy_exits_2(self):
        policy = self.write_policy(GOOD_POLICY)
        b = self.start("--policy", policy)
        p = self.peer(b, name="c")
        self.assertTrue(bp.wait_until(lambda: state_written(p, "c"), 3 * SLOW))
        b.stop()
        self.write_policy(BROKEN_POLICY)
        out = bp.run_broker_cli(["--endpoint", "tcp://127.0.0.1:%d" % bp.free_port(),
                                 "--services", "", "--policy", policy, "--state-dir", self.state,
                                 "--strict-policy"], timeout=10 * SLOW)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("routing.lua:", out.stderr)

    def test_corrupted_state_file_is_reported_and_the_broker_starts_empty(self):
        b = self.start()
        svc = self.peer(b, identity=b"svc-c", register="kept-name")
        self.assertTrue(bp.wait_until(lambda: state_written(svc, "kept-name"), 3 * SLOW))
        b.stop()
        db = os.path.join(self.state, "broker.db")
        with open(db, "r+b") as f:
            f.write(b"this is not an SQLite file" * 400)
        for tail in ("-wal", "-shm"):
            if os.path.exists(db + tail):
                os.unlink(db + tail)
        b2 = self.start()
        self.assertTrue(b2.wait_for_log(r"starting empty", 5 * SLOW), b2.log_text())
        log = b2.log_text()
        self.assertRegex(log, r"ERROR\s+state file .*broker\.db cannot be read .* moved aside to "
                              r".*broker\.db\.corrupt-")
        self.assertRegex(log, r"starting empty")
        aside = [n for n in os.listdir(self.state) if n.startswith("broker.db.corrupt-")]
        self.assertTrue(aside, os.listdir(self.state))
        c = self.peer(b2, name="c")
        self.assertNotIn("kept-name", bp.services(c))
        self.assertEqual(c.call_broker("stats")["payload"]["state"]["opened"], "corrupt")

    def test_missing_state_file_is_reported_and_the_broker_starts_empty(self):
        b = self.start()
        self.assertTrue(b.wait_for_log(r"ready: listening", 5 * SLOW), b.log_text())
        log = b.log_text()
        self.assertRegex(log, r"WARN\s+state .*broker\.db: no state file yet; starting empty")
        c = self.peer(b, name="c")
        self.assertEqual(c.call_broker("stats")["payload"]["state"]["opened"], "new")
        self.assertTrue(os.path.exists(os.path.join(self.state, "broker.db")))


if __name__ == "__main__":
    unittest.main()
