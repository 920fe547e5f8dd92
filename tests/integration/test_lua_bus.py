#!/usr/bin/python3
"""What a Lua service receives and sends (issue 4, docs/lua-services.md):
events and broadcasts reach its handlers; bus.event, bus.broadcast and
bus.request go through the broker like a remote peer's messages; request
callbacks get answers, errors and timeouts; timers fire.
Rules of docs/protocol.md checked: T8 (a hosted service is a peer like any
other), S1 (it sends as its own name), T3/T4 (its requests are tracked and
answered), T5 (events and broadcasts), D1 (timeouts).

Observed through tests/lua_services/relay.lua ("lua-relay"), which reports
what it gets as events to a remote test peer, the "probe", and
tests/lua_services/fallback.lua ("lua-fallback", on_event only)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

DEFAULT_TIMEOUT_MS = 400  # the broker's --request-timeout-ms here


class LuaBusTest(bp.LuaServicesTestCase):
    SERVICE_FILES = {"echo.lua": os.path.join(bp.SERVICES_DIR, "echo.lua"),
                     "relay.lua": os.path.join(bp.LUA_FIXTURES, "relay.lua"),
                     "fallback.lua": os.path.join(bp.LUA_FIXTURES, "fallback.lua"),
                     "ordered.lua": os.path.join(bp.LUA_FIXTURES, "ordered.lua")}
    EXTRA_ARGS = ("--request-timeout-ms", str(DEFAULT_TIMEOUT_MS))

    def setUp(self):
        super().setUp()
        self.client = self.peer(name="bus-client")
        self.probe_name = "probe-" + bp.new_id()[2:10]
        self.probe = self.peer(register=self.probe_name)
        self.stash = []  # what the probe got that a test did not look for yet
        self.assertEqual(self.relay("probe", {"name": self.probe_name}),
                         {"probe": self.probe_name, "name": "lua-relay"})

    def tearDown(self):
        self.relay("ticks", {"on": False})
        super().tearDown()

    def test_what_a_service_sends_leaves_in_the_order_it_was_sent(self):
        # three events, then the response, to the same peer: in that order,
        # for several requests in one run of the services, and for a burst
        # longer than the event loop's group of 64 messages (the services
        # answer each group as it is handled: services_run_queued). It
        # checks order, not when answers leave (that is the benchmark's:
        # docs/performance.md); whether a burst is split into groups is the
        # event loop's, not the test's, to decide.
        client = self.peer(register="order-client-" + bp.new_id()[2:10])
        ids = [client.request("lua-ordered", "go")["msg_id"] for _ in range(150)]
        got = [client.recv()[1] for _ in range(4 * len(ids))]
        for k, msg_id in enumerate(ids):
            part = got[4 * k:4 * k + 4]
            self.assertEqual([b["type"] for b in part], ["event"] * 3 + ["response"], bp.dump(part))
            self.assertEqual([b["payload"]["i"] for b in part[:3]], [1, 2, 3])
            self.assertEqual(part[3]["correlation_id"], msg_id)

    # -- helpers ---------------------------------------------------------

    def relay(self, action, payload=None, expect="response"):
        m = self.client.request("lua-relay", action, payload=payload)
        _, body = self.client.recv_answer(m["msg_id"])
        self.assertEqual(body["type"], expect, bp.dump(body))
        return body["payload"]

    def report(self, action, timeout=2.0, where=None, src="lua-relay"):
        """The payload of the next event `action` the probe got (from `src`);
        others are kept for later calls."""
        def match(b):
            return (b.get("type") == "event" and b.get("action") == action
                    and (where is None or where(b["payload"])))
        found = [b for b in self.stash if match(b)]
        if found:
            body = found[0]
            self.stash.remove(body)
        else:
            _, body, skipped = self.probe.recv_until(match, timeout)
            self.stash.extend(skipped)
        self.assertEqual(body["src"], src, bp.dump(body))
        self.assertEqual(body["dst"], self.probe_name)
        self.assertRegex(body["msg_id"], bp.UUID_RE)
        self.assertRegex(body["timestamp"], bp.TIMESTAMP_RE)
        return body["payload"]

    def reports(self, action, seconds, where=None):
        """Every event `action` the probe gets within `seconds`."""
        out = [b["payload"] for b in self.stash
               if b.get("action") == action and (where is None or where(b["payload"]))]
        deadline = time.monotonic() + seconds
        while True:
            frames = self.probe.recv_raw(max(0, deadline - time.monotonic()))
            if frames is None:
                return out
            body = bp.loads(frames[-1])
            if body.get("action") == action and (where is None or where(body["payload"])):
                out.append(body["payload"])

    def call(self, dst, action, payload=None, timeout_ms=None, tag="t"):
        """Has the relay bus.request(dst, ...); returns its msg_id."""
        p = {"dst": dst, "action": action, "payload": payload, "tag": tag}
        if timeout_ms is not None:
            p["timeout_ms"] = timeout_ms
        return self.relay("call", p)["msg_id"]

    # -- receiving ---------------------------------------------------------

    def test_an_event_reaches_on_event_with_every_field(self):
        sender = self.peer()
        raw = ('{"msg_id":"ev-1-%s","type":"event","src":"ev-sender","dst":"lua-relay",'
               '"action":"price_changed","payload":{"sku":"A1","price":2.5},'
               '"timestamp":"2024-05-01T10:00:00.000Z","extra":[1]}' % bp.new_id())
        sender.send(raw)
        got = self.report("got_event")
        self.assertEqual(got["type"], "event")
        self.assertEqual(got["src"], "ev-sender")
        self.assertEqual(got["dst"], "lua-relay")
        self.assertEqual(got["action"], "price_changed")
        self.assertEqual(got["payload"], {"sku": "A1", "price": 2.5})
        self.assertTrue(got["msg_id"].startswith("ev-1-"))
        self.assertEqual(got["timestamp"], "2024-05-01T10:00:00.000Z")
        self.assertEqual(got["raw"], raw)  # msg.raw: the bytes as sent
        self.assertEqual(got["table"]["extra"], [1])  # msg:table(): the whole message
        self.assertNotIn("correlation_id", got)
        sender.expect_nothing(0.1)  # events are not answered

    def test_a_broadcast_reaches_on_broadcast_and_falls_back_to_on_event(self):
        sender = self.peer(register="bc-sender")
        sender.send(bp.msg("event", "bc-sender", "lua-fallback", "probe",
                           payload={"name": self.probe_name}))
        time.sleep(0.05)
        sender.send(bp.msg("event", "bc-sender", "broadcast", "store_closing", payload={"in": 15}))
        got = self.report("got_broadcast")
        self.assertEqual(got["dst"], "broadcast")
        self.assertEqual(got["action"], "store_closing")
        self.assertEqual(got["src"], "bc-sender")
        self.assertEqual(got["payload"], {"in": 15})
        fb = self.report("fallback_got", src="lua-fallback")  # lua-fallback has no on_broadcast
        self.assertEqual(fb, {"action": "store_closing", "src": "bc-sender", "dst": "broadcast",
                              "payload": {"in": 15}})
        # the probe, a registered peer, got the broadcast too
        if not [b for b in self.stash if b.get("action") == "store_closing"]:
            self.probe.recv_until(lambda b: b.get("action") == "store_closing", 0.5)

    def test_a_request_to_the_relay_shows_ttl_and_the_view_is_read_only(self):
        m = self.client.request("lua-relay", "view", payload={"k": [1, 2]}, ttl_ms=1234)
        _, body = self.client.recv_answer(m["msg_id"])
        got = body["payload"]
        self.assertEqual(got["ttl_ms"], 1234)
        self.assertEqual(got["type"], "request")
        self.assertEqual(got["msg_id"], m["msg_id"])
        self.assertEqual(got["payload"], {"k": [1, 2]})

    # -- sending -----------------------------------------------------------

    def test_bus_event_reaches_a_remote_peer(self):
        self.relay("event", {"dst": self.probe_name, "action": "restocked",
                             "payload": {"sku": "B2"}})
        got = self.report("restocked")
        self.assertEqual(got, {"sku": "B2"})

    def test_bus_event_to_a_missing_service_is_logged(self):
        mark = len(self.broker.log_text())
        self.relay("event", {"dst": "nobody-here", "action": "x"})
        m = self.broker.wait_for_log(r"service lua-relay: error from broker: .*no_such_service",
                                     start=mark)
        self.assertTrue(m, self.broker.log_text()[mark:])

    def test_bus_event_with_a_bad_name_raises_in_the_handler(self):
        m = self.client.request("lua-relay", "bad_event")
        _, body = self.client.recv_answer(m["msg_id"])
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        self.assertTrue(self.broker.wait_for_log(r"'not a name!' is not a service name"))

    def test_bus_broadcast_reaches_remote_and_lua_services_but_not_itself(self):
        other = self.peer(register="bc-listener")
        self.peer().send(bp.msg("event", "probe-fallback", "lua-fallback", "probe",
                                payload={"name": self.probe_name}))
        time.sleep(0.05)
        sent = self.relay("broadcast", {"action": "flash_sale", "payload": {"pct": 20}})
        _, body, _ = other.recv_until(lambda b: b.get("action") == "flash_sale")
        self.assertEqual(body["type"], "event")
        self.assertEqual(body["src"], "lua-relay")
        self.assertEqual(body["dst"], "broadcast")
        self.assertEqual(body["msg_id"], sent["msg_id"])
        self.assertEqual(body["payload"], {"pct": 20})
        self.assertEqual(self.report("fallback_got", src="lua-fallback")["src"], "lua-relay")
        # the relay does not get its own broadcast
        self.assertEqual(self.reports("got_broadcast", 0.3), [])

    def test_bus_request_to_a_remote_service_gets_the_response(self):
        svc = self.peer(register="remote-pricing")
        sent = self.call("remote-pricing", "price", {"sku": "A1"}, timeout_ms=2000)
        _, req = svc.recv()
        self.assertEqual(req["type"], "request")
        self.assertEqual(req["src"], "lua-relay")
        self.assertEqual(req["dst"], "remote-pricing")
        self.assertEqual(req["action"], "price")
        self.assertEqual(req["payload"], {"sku": "A1"})
        self.assertEqual(req["ttl_ms"], 2000)
        self.assertEqual(req["msg_id"], sent)
        svc.answer(req, payload={"price": 2.5})
        got = self.report("callback")
        self.assertEqual(got, {"tag": "t", "payload": {"price": 2.5}})

    def test_bus_request_gets_the_remote_services_error(self):
        svc = self.peer(register="remote-strict")
        self.call("remote-strict", "price", {"sku": "??"})
        _, req = svc.recv()
        svc.answer(req, type="error", payload={"code": "unknown_sku", "message": "no ??"})
        got = self.report("callback")
        self.assertEqual(got["err"], {"code": "unknown_sku", "message": "no ??"})
        self.assertNotIn("payload", got)

    def test_bus_request_to_a_missing_service_gets_no_such_service(self):
        self.call("nobody-home", "price")
        got = self.report("callback")
        self.assertEqual(got["err"]["code"], "no_such_service")
        self.assertIsInstance(got["err"]["message"], str)

    def test_bus_request_timeout(self):
        svc = self.peer(register="remote-slow")
        start = time.monotonic()
        self.call("remote-slow", "price", timeout_ms=200)
        _, req = svc.recv()
        self.assertEqual(req["ttl_ms"], 200)
        got = self.report("callback", timeout=2.0)
        elapsed = time.monotonic() - start
        self.assertEqual(got["err"]["code"], "timeout")
        self.assertGreaterEqual(elapsed, 0.18)
        self.assertLess(elapsed, 1.0)
        # a late answer is refused and never reaches the callback
        svc.answer(req, payload="late")
        _, body = svc.recv()
        self.assertEqual(bp.error_code(body), "unknown_request")
        self.assertEqual(self.reports("callback", 0.2), [])

    def test_bus_request_default_timeout_is_the_brokers(self):
        svc = self.peer(register="remote-slow2")
        start = time.monotonic()
        self.call("remote-slow2", "price")
        _, req = svc.recv()
        self.assertEqual(req["ttl_ms"], DEFAULT_TIMEOUT_MS)
        got = self.report("callback")
        self.assertEqual(got["err"]["code"], "timeout")
        self.assertGreaterEqual(time.monotonic() - start, DEFAULT_TIMEOUT_MS / 1000.0 - 0.02)

    def test_bus_request_with_a_bad_timeout_raises(self):
        for bad in (0, 300001):
            m = self.client.request("lua-relay", "call", payload={
                "dst": "echo-service", "action": "echo", "timeout_ms": bad})
            _, body = self.client.recv_answer(m["msg_id"])
            self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))

    def test_bus_request_to_another_lua_service_and_to_itself(self):
        self.call("echo-service", "echo", {"hi": [1]}, tag="echo")
        self.assertEqual(self.report("callback"), {"tag": "echo", "payload": {"hi": [1]}})
        self.call("lua-relay", "probe", {"name": self.probe_name}, tag="self")
        self.assertEqual(self.report("callback"),
                         {"tag": "self",
                          "payload": {"probe": self.probe_name, "name": "lua-relay"}})

    def test_bus_request_to_the_broker(self):
        self.call("broker", "list_services", tag="broker")
        got = self.report("callback")
        names = {s["name"] for s in got["payload"]["services"]}
        self.assertTrue({"lua-relay", "echo-service", "lua-fallback", self.probe_name} <= names)

    def test_a_lua_service_cannot_send_as_another(self):
        # the relay's messages carry its own name: a remote holding another
        # name sees src lua-relay, and the broker's S1 applies to it as to a peer
        self.relay("event", {"dst": self.probe_name, "action": "who"})
        _, body, _ = self.probe.recv_until(lambda b: b.get("action") == "who")
        self.assertEqual(body["src"], "lua-relay")

    def test_a_null_response_payload_reaches_the_callback(self):
        # echo answers payload null; the callback gets json.null (reported as null)
        self.call("echo-service", "echo", None, tag="null")
        got = self.report("callback")
        self.assertEqual(got, {"tag": "null", "payload": None})

    # -- helpers of the sandbox --------------------------------------------

    def test_print_and_log_write_to_the_broker_log(self):
        mark = len(self.broker.log_text())
        self.assertTrue(self.relay("log", {"n": 7}))
        log = self.broker.log_text()
        # (lua-cjson decodes every JSON number as a float: 7 -> 7.0)
        self.assertTrue(self.broker.wait_for_log(r"INFO +\[service relay\.lua\] printed 7 nil",
                                                 start=mark), log[mark:])
        self.assertRegex(log[mark:], r"INFO +\[service relay\.lua\] info line")
        self.assertRegex(log[mark:], r"WARN +\[service relay\.lua\] warn line")
        self.assertRegex(log[mark:], r"ERROR +\[service relay\.lua\] error line")
        self.assertNotIn("debug line", log[mark:])  # --log-level info

    def test_the_sandbox_leaves_out_files_processes_and_code_loading(self):
        got = self.relay("sandbox")
        self.assertEqual({k: v for k, v in got.items() if v is not True}, {}, got)

    # -- timers ------------------------------------------------------------

    def test_bus_after_fires_once(self):
        start = time.monotonic()
        tid = self.relay("after", {"ms": 150, "tag": "once"})["id"]
        self.assertIsInstance(tid, int)
        got = self.report("timer", where=lambda p: p.get("tag") == "once")
        self.assertGreaterEqual(time.monotonic() - start, 0.14)
        self.assertEqual(got, {"tag": "once"})
        self.assertEqual(self.reports("timer", 0.3, lambda p: p.get("tag") == "once"), [])
        self.assertEqual(self.relay("cancel", {"id": tid}), {"cancelled": False})  # already fired

    def test_bus_every_repeats_until_cancelled(self):
        start = time.monotonic()
        self.relay("every", {"ms": 50, "tag": "rep", "times": 4})
        got = self.reports("timer", 0.6, lambda p: p.get("tag") == "rep")
        self.assertEqual([p["n"] for p in got], [1, 2, 3, 4])
        self.assertGreaterEqual(time.monotonic() - start, 0.2)

    def test_bus_cancel_stops_a_pending_timer(self):
        tid = self.relay("after", {"ms": 200, "tag": "never"})["id"]
        self.assertEqual(self.relay("cancel", {"id": tid}), {"cancelled": True})
        self.assertEqual(self.relay("cancel", {"id": tid}), {"cancelled": False})
        self.assertEqual(self.relay("cancel", {"id": 987654}), {"cancelled": False})
        self.assertEqual(self.reports("timer", 0.4, lambda p: p.get("tag") == "never"), [])

    def test_a_timer_started_at_load_runs_and_sends(self):
        self.relay("ticks", {"on": True})
        a = self.report("tick", timeout=1.0)["ticks"]
        b = self.report("tick", timeout=1.0)["ticks"]
        self.assertEqual(b - a, 4)  # every 50 ms, reported every 4th

    def test_bus_now_ms_is_monotonic_milliseconds(self):
        a = self.relay("now")["now"]
        time.sleep(0.1)
        b = self.relay("now")
        self.assertGreaterEqual(b["now"] - a, 95)
        self.assertLess(b["now"] - a, 1000)
        self.assertLess(abs(b["time"] - time.time()), 5)  # os.time is there too


if __name__ == "__main__":
    bp.main()
