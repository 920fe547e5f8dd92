#!/usr/bin/python3
"""Live services (issue 4): adding a file to the services directory while
the broker runs adds a service within a second; editing it reloads it (new
behaviour, fresh state); a broken edit keeps the old version running and
logs why; deleting it unregisters it. Fixtures: tests/lua_services/live_*.lua
("lua-live", answering {version, calls}).
Rules of docs/protocol.md checked: T8, T1/T2 (register on load, unregister
on delete), N2 (reserved names refused), T3 (no_such_service once gone)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

LIVE = 1.0  # seconds a change may take (issue 4: "within a second")


def fixture(name):
    with open(os.path.join(bp.LUA_FIXTURES, name), "rb") as f:
        return f.read()


class LiveServicesTest(bp.LuaServicesTestCase):
    SERVICE_FILES = {"echo.lua": os.path.join(bp.SERVICES_DIR, "echo.lua")}

    def setUp(self):
        super().setUp()
        self.client = self.peer(name="live-client")
        for f in os.listdir(self.dir):  # each test starts with echo.lua alone
            if f != "echo.lua":
                os.unlink(os.path.join(self.dir, f))
        self.assertTrue(bp.wait_until(lambda: bp.services(self.client) == {"echo-service": 1},
                                      LIVE), bp.services(self.client))

    # -- helpers ---------------------------------------------------------

    def write(self, file, content, atomic=False):
        """Writes a service file in place, or as an editor does (a temp file renamed over it)."""
        path = os.path.join(self.dir, file)
        if atomic:
            tmp = os.path.join(self.dir, "." + file + ".tmp")
            with open(tmp, "wb") as f:
                f.write(content)
            os.rename(tmp, path)
        else:
            with open(path, "wb") as f:
                f.write(content)

    def ask(self, dst="lua-live", action="get"):
        m = self.client.request(dst, action)
        return self.client.recv_answer(m["msg_id"])[1]

    def version(self):
        body = self.ask()
        if body["type"] != "response":
            return bp.error_code(body)
        return body["payload"]["version"]

    def wait_version(self, want, timeout=LIVE):
        start = time.monotonic()
        got = bp.wait_until(lambda: self.version() == want, timeout, interval=0.02)
        if not got:
            self.fail("version %r not served within %.1f s (now %r); log:\n%s"
                      % (want, timeout, self.version(), self.broker.log_text()))
        return time.monotonic() - start

    def wait_log(self, pattern, start, timeout=LIVE):
        m = self.broker.wait_for_log(pattern, timeout=timeout, start=start)
        self.assertTrue(m, "log has no %r; log:\n%s" % (pattern, self.broker.log_text()[start:]))
        return m.group(0)

    def mark(self):
        return len(self.broker.log_text())

    # -- tests -------------------------------------------------------------

    def test_adding_a_file_adds_a_service_within_a_second(self):
        mark = self.mark()
        start = time.monotonic()
        self.write("live.lua", fixture("live_v1.lua"))
        ok = bp.wait_until(lambda: bp.services(self.client).get("lua-live") == 1, LIVE, 0.02)
        self.assertTrue(ok, self.broker.log_text()[mark:])
        self.assertLess(time.monotonic() - start, LIVE)
        self.assertEqual(self.ask()["payload"], {"version": 1, "calls": 1})
        self.wait_log(r"service lua-live loaded from live\.lua", mark)

    def test_editing_reloads_with_new_behaviour_and_fresh_state(self):
        self.write("live.lua", fixture("live_v1.lua"))
        self.wait_version(1)
        for _ in range(3):
            self.assertEqual(self.ask()["payload"]["version"], 1)
        self.assertGreaterEqual(self.ask()["payload"]["calls"], 5)
        mark = self.mark()
        self.write("live.lua", fixture("live_v2.lua"))
        self.assertLess(self.wait_version(2), LIVE)
        self.wait_log(r"service lua-live reloaded from live\.lua", mark)
        # a reload starts a fresh state: calls counts from 1 again
        self.assertEqual(self.ask()["payload"]["calls"], 2)  # wait_version's call was the first
        self.assertEqual(bp.services(self.client).get("lua-live"), 1)

    def test_an_editor_style_save_by_rename_reloads(self):
        self.write("live.lua", fixture("live_v1.lua"), atomic=True)
        self.wait_version(1)
        self.write("live.lua", fixture("live_v2.lua"), atomic=True)
        self.wait_version(2)
        self.assertEqual(bp.services(self.client).get("lua-live"), 1)

    def test_broken_edits_keep_the_old_version_running(self):
        self.write("live.lua", fixture("live_v1.lua"))
        self.wait_version(1)
        for broken, why in (("live_broken_syntax.lua", r"live\.lua:4: .*expected"),
                            ("live_broken_runtime.lua",
                             r"live\.lua:3: attempt to index a nil value"),
                            ("live_not_a_table.lua", r"must return a service table")):
            mark = self.mark()
            self.write("live.lua", fixture(broken))
            line = self.wait_log(r"(?m)^.*service live\.lua refused, the previous version keeps "
                                 r"running: .*$", mark)
            self.assertRegex(line, why)
            self.assertRegex(line, bp.LOG_LINE_RE)
            self.assertEqual(self.version(), 1)
        # still the old version and its state; a good edit is taken again
        self.assertEqual(bp.services(self.client).get("lua-live"), 1)
        self.write("live.lua", fixture("live_v2.lua"))
        self.wait_version(2)

    def test_deleting_a_file_unregisters_the_service(self):
        self.write("live.lua", fixture("live_v1.lua"))
        self.wait_version(1)
        mark = self.mark()
        start = time.monotonic()
        os.unlink(os.path.join(self.dir, "live.lua"))
        ok = bp.wait_until(lambda: "lua-live" not in bp.services(self.client), LIVE, 0.02)
        self.assertTrue(ok, self.broker.log_text()[mark:])
        self.assertLess(time.monotonic() - start, LIVE)
        m = self.client.request("lua-live", "get")
        self.expectError(self.client, "no_such_service", correlation_id=m["msg_id"])
        self.wait_log(r"service lua-live \(live\.lua\): file removed; unregistering", mark)
        self.assertEqual(self.ask("echo-service", "echo")["type"], "response")

    def test_a_broken_new_file_is_not_loaded_and_logged(self):
        mark = self.mark()
        self.write("broken.lua", fixture("live_broken_syntax.lua"))
        line = self.wait_log(r"(?m)^.*service broken\.lua not loaded: .*$", mark)
        self.assertRegex(line, r"broken\.lua:4:")
        self.assertNotIn("lua-live", bp.services(self.client))
        # fixing it loads it
        self.write("broken.lua", fixture("live_v1.lua"))
        self.wait_version(1)

    def test_sending_at_top_level_is_refused(self):
        mark = self.mark()
        self.write("top_send.lua", fixture("top_send.lua"))
        line = self.wait_log(r"(?m)^.*service top_send\.lua not loaded: .*$", mark)
        self.assertIn("bus.broadcast can be called from handlers and timers only", line)
        self.assertNotIn("lua-top-send", bp.services(self.client))

    def test_names_a_service_may_not_take(self):
        mark = self.mark()
        self.write("broker.lua", b"return {}\n")                          # reserved
        self.write("bad.lua", b'return { name = "has space" }\n')         # not a name
        self.write("smartshop.x.lua", b"return {}\n")                      # reserved prefix
        self.wait_log(r"service broker\.lua not loaded: .*'broker' is not a name a service may "
                      r"register", mark)
        self.wait_log(r"service bad\.lua not loaded: .*'has space' is not a name", mark)
        self.wait_log(r"service smartshop\.x\.lua not loaded: .*'smartshop\.x' is not a name", mark)
        self.assertEqual(bp.services(self.client), {"echo-service": 1})

    def test_renaming_the_service_in_the_file_moves_the_registration(self):
        self.write("live.lua", fixture("live_v1.lua"))
        self.wait_version(1)
        self.write("live.lua", fixture("live_v1.lua").replace(b'"lua-live"', b'"lua-live-2"'))
        ok = bp.wait_until(lambda: "lua-live-2" in bp.services(self.client), LIVE, 0.02)
        self.assertTrue(ok, self.broker.log_text())
        self.assertNotIn("lua-live", bp.services(self.client))
        self.assertEqual(self.ask("lua-live-2")["payload"]["version"], 1)

    def test_files_that_are_not_services_are_ignored(self):
        mark = self.mark()
        self.write("notes.txt", b"not lua")
        self.write(".hidden.lua", fixture("live_v1.lua"))
        time.sleep(0.3)
        self.assertEqual(bp.services(self.client), {"echo-service": 1})
        self.assertNotRegex(self.broker.log_text()[mark:], r"notes\.txt|\.hidden\.lua")

    def test_a_name_from_the_file_name(self):
        self.write("stock-check.lua", b"return { on_request = function() return bus.name end }\n")
        ok = bp.wait_until(lambda: "stock-check" in bp.services(self.client), LIVE, 0.02)
        self.assertTrue(ok, self.broker.log_text())
        self.assertEqual(self.ask("stock-check")["payload"], "stock-check")

    def test_many_files_at_once(self):
        for i in range(10):
            self.write("many%d.lua" % i, fixture("live_v1.lua").replace(
                b'"lua-live"', b'"lua-many-%d"' % i))
        want = {"lua-many-%d" % i for i in range(10)}
        ok = bp.wait_until(lambda: want <= set(bp.services(self.client)), LIVE, 0.02)
        self.assertTrue(ok, bp.services(self.client))
        for i in range(10):
            os.unlink(os.path.join(self.dir, "many%d.lua" % i))
        ok = bp.wait_until(lambda: not want & set(bp.services(self.client)), LIVE, 0.02)
        self.assertTrue(ok, bp.services(self.client))

    def test_requests_around_a_deletion_each_get_one_answer(self):
        self.write("live.lua", fixture("live_v1.lua"))
        self.wait_version(1)
        reqs = [self.client.request("lua-live", "get") for _ in range(50)]
        os.unlink(os.path.join(self.dir, "live.lua"))
        seen = set()
        deadline = time.monotonic() + 2.0
        while len(seen) < len(reqs) and time.monotonic() < deadline:
            _, body = self.client.recv(timeout=max(0.01, deadline - time.monotonic()))
            seen.add(body["correlation_id"])
        self.assertEqual(seen, {r["msg_id"] for r in reqs})
        self.assertAlive()


if __name__ == "__main__":
    bp.main()
