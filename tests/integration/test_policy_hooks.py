#!/usr/bin/python3
"""The hook contract (docs/policies.md), through real sockets: what filter,
route, on_register and on_unregister see, what they may return, and what
the wire then shows (P1: bytes forwarded unchanged unless filter rewrote)."""
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

POLICY = r"""
local function show(v)
  if v == nil then return "nil" end
  if v == json.null then return "null" end
  return math.type(v) or tostring(v)
end

function filter(msg)
  local a = msg.action
  if msg.dst == "broker" and a == "stats" then
    return false, "stats are off"
  end
  if a == "fields" then
    local p = msg.payload
    return false, json.encode({
      msg_id = msg.msg_id, type = msg.type, src = msg.src, dst = msg.dst, action = a,
      correlation_id = show(msg.correlation_id), timestamp = msg.timestamp,
      ttl_ms = msg.ttl_ms, ttl_type = math.type(msg.ttl_ms),
      sku = p.sku, nothing = show(p.nothing), missing = show(p.missing),
      raw_len = #msg.raw, extra = msg:table().extra,
    })
  end
  if a == "no_payload" then
    return false, show(msg.payload)
  end
  if a == "seq" then
    -- the same fields read from message after message (luamsg.c keeps
    -- them between calls): each must be this message's
    return false, json.encode({dst = show(msg.dst), src = show(msg.src), ttl = show(msg.ttl_ms),
                               topic = show(msg.topic), corr = show(msg.correlation_id),
                               id = show(msg.msg_id), p = show(msg.payload_json),
                               k = type(msg.payload) ~= "table" and "-"
                                   or type(msg.payload.k) == "table" and "table"
                                   or show(msg.payload.k)})
  end
  if a == "exact" then
    local p = msg.payload
    return false, json.encode({n = show(p.n), x = show(p.x), big = p.big, empty = p.empty,
                               obj = p.obj})
  end
  if a == "raw" then
    return false, msg.raw
  end
  if a == "deny_plain" then return false end
  if a == "pass_true" then return true end
  if a == "rewrite" then
    local t = msg:table()
    t.payload.seen_by_policy = true
    t.action = "rewritten"
    return t
  end
  if msg.type == "response" and type(msg.payload) == "table" and msg.payload.secret then
    return false, "no secrets in answers"
  end
end

local ALIAS = { ["old-name"] = "new-name" }

function route(msg, ctx)
  local d = msg.dst
  if d == "broker" or d == "broadcast" then error("route() must not see " .. d) end
  if ALIAS[d] then return ALIAS[d] end
  if d == "pick" then return "pool", msg.payload.instance end
  if d == "prefer" then return { "primary", "backup" } end
  if d == "fanout" then return { "fan-a", "fan-b" } end
  if d == "ghost" then return "nobody-here" end
  if d == "report" then
    log.info("CTX " .. json.encode({
      instances = ctx.instances("pool"), none = #ctx.instances("nobody-here"),
      has = ctx.has("pool"), has_not = ctx.has("nobody-here"), services = ctx.services(),
    }))
    return "pool"
  end
end

function on_register(name, peer)
  log.info("REGISTER " .. name .. " id=" .. peer.id .. " names=" .. table.concat(peer.names, ","))
  if name:find("^blocked%-") then
    return false, "blocked names stay off this bus"
  end
end

function on_unregister(name, peer)
  log.info("UNREGISTER " .. name .. " id=" .. peer.id)
end
"""


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


class HooksCase(bp.PolicyTestCase):
    POLICY = POLICY

    def denied_reason(self, client, req):
        body = self.expectError(client, "denied", correlation_id=req["msg_id"])
        return body["payload"]["message"]


class FilterTest(HooksCase):
    def test_msg_fields(self):
        c = self.peer(name="shop-ui")
        req = bp.msg("request", "shop-ui", "nobody", "fields", ttl_ms=1500, extra={"k": 1},
                     payload={"sku": "A-1", "nothing": None})
        c.send(req)
        got = json.loads(self.denied_reason(c, req))
        self.assertEqual(got, {
            "msg_id": req["msg_id"], "type": "request", "src": "shop-ui", "dst": "nobody",
            "action": "fields", "correlation_id": "nil", "timestamp": req["timestamp"],
            "ttl_ms": 1500, "ttl_type": "integer", "sku": "A-1", "nothing": "null",
            "missing": "nil", "raw_len": len(bp.dumps(req)),
            "extra": {"k": 1},
        })

    def test_raw_is_the_text_received_and_payload_may_be_absent(self):
        c = self.peer(name="shop-ui")
        mid = str(uuid.uuid4())
        text = '{ "type":"request", "msg_id":"%s","src":"shop-ui",  "dst":"nobody","action":"raw" }' % mid
        c.send(text)
        self.assertEqual(self.denied_reason(c, {"msg_id": mid}), text)
        req = c.request("nobody", action="no_payload")
        self.assertEqual(self.denied_reason(c, req), "nil")

    def test_pass_forwards_the_bytes_received(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=uid("svc"))
        for action in ("untouched", "pass_true"):
            mid = str(uuid.uuid4())
            text = ('{"msg_id": "%s", "type": "request", "src": "shop-ui", "dst": "%s", '
                    '"action": "%s", "z-unknown": [1, 2.50, {}], "payload": {"b": 1, "a": []}}'
                    % (mid, svc.name, action))
            c.send(text)
            frames, _ = svc.recv()
            self.assertEqual(frames[-1], text.encode())

    def test_false_refuses_with_the_reason_or_a_default(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=uid("svc"))
        req = c.request(svc.name, action="deny_plain")
        self.assertEqual(self.denied_reason(c, req), "denied by policy")
        svc.expect_nothing(0.1)

    def test_a_returned_table_replaces_the_message(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=uid("svc"))
        req = c.request(svc.name, action="rewrite", payload={"sku": "A-1"}, note="kept")
        _, got = svc.recv()
        expected = dict(req, action="rewritten", payload={"sku": "A-1", "seen_by_policy": True})
        self.assertEqual(got, expected)
        # still the same request: its answer goes back by msg_id
        svc.answer(got, payload={"ok": True})
        _, answer = c.recv_answer(req["msg_id"])
        self.assertEqual(answer["payload"], {"ok": True})

    def test_a_rewrite_keeps_any_valid_msg_id(self):
        # E4 allows "/" in msg_id; lua-cjson writes it "\/", which must not
        # count as a changed msg_id
        c = self.peer(name="shop-ui")
        svc = self.peer(register=uid("svc"))
        req = bp.msg("request", "shop-ui", svc.name, "rewrite", payload={})
        req["msg_id"] = "order/%s" % uuid.uuid4()
        c.send(req)
        _, got = svc.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])

    def test_fields_read_again_are_each_messages_own(self):
        # the hooks read the same fields from each message; some change,
        # come and go (ttl_ms, payload), or arrive escaped
        c = self.peer(name="shop-ui")
        cases = [
            dict(dst="nobody", ttl_ms=900, payload={"k": 1}),
            dict(dst="nobody", payload={"k": "two"}),
            dict(dst="other-one", ttl_ms=5),
            dict(dst="nobody"),
            dict(dst="n\u006fbody", ttl_ms=7, payload={"k": [1]}),
        ]
        for _ in range(2):
            for case in cases:
                case = dict(case)
                dst = case.pop("dst")
                req = bp.msg("request", "shop-ui", "DST", "seq", payload=case.pop("payload", None),
                             **case)
                text = bp.dumps(req).decode().replace('"DST"', '"%s"' % dst)
                c.send(text)
                got = json.loads(self.denied_reason(c, req))
                want = {"dst": dst.replace("\\u006f", "o"), "src": "shop-ui",
                        "ttl": "integer" if "ttl_ms" in case else "nil",
                        "topic": "nil", "corr": "nil", "id": req["msg_id"],
                        "p": bp.dumps(req["payload"]).decode() if req.get("payload") else "null",
                        "k": "-"}
                if req.get("payload"):
                    k = req["payload"]["k"]
                    want["k"] = "integer" if isinstance(k, int) else ("table" if isinstance(k, list) else k)
                self.assertEqual(got, want, text)

    def test_the_payload_keeps_integers_and_arrays(self):
        # the policy reads payloads with the services' codec (lua_json.c):
        # 3 is an integer, 2^53 + 1 keeps its digits, [] stays an array, in
        # what the hook sees and in a rewrite it returns
        c = self.peer(name="shop-ui")
        payload = {"n": 3, "x": 2.5, "big": 9007199254740993, "empty": [], "obj": {}}
        req = c.request("nobody", action="exact", payload=payload)
        got = self.denied_reason(c, req)
        self.assertEqual(json.loads(got), dict(payload, n="integer", x="float"), got)
        self.assertIn('"big":9007199254740993', got)
        svc = self.peer(register=uid("svc"))
        req = c.request(svc.name, action="rewrite", payload=dict(payload))
        frames, got = svc.recv()
        self.assertEqual(got["payload"], dict(payload, seen_by_policy=True), frames[-1])

    def test_filter_sees_answers(self):
        c = self.peer(name="shop-ui")
        svc = self.peer(register=uid("svc"))
        req = c.request(svc.name, action="lookup")
        _, got = svc.recv()
        bad = svc.answer(got, payload={"secret": "hunter2"})
        self.assertEqual(self.denied_reason(svc, bad), "no secrets in answers")
        c.expect_nothing(0.1)
        svc.answer(got, payload={"ok": True})        # the request is still in flight
        _, answer = c.recv_answer(req["msg_id"])
        self.assertEqual(answer["payload"], {"ok": True})

    def test_filter_sees_requests_to_the_broker(self):
        c = self.peer(name="shop-ui")
        req = c.request("broker", action="stats")
        self.assertEqual(self.denied_reason(c, req), "stats are off")
        self.assertEqual(c.call_broker("ping")["type"], "response")


class RouteTest(HooksCase):
    def test_alias_keeps_the_bytes_and_dst(self):
        c = self.peer(name="shop-ui")
        new = self.peer(register="new-name")
        req = c.request("old-name", action="get")
        frames, got = new.recv()
        self.assertEqual(frames[-1], bp.dumps(req))
        self.assertEqual(got["dst"], "old-name")
        new.answer(got)
        self.assertEqual(c.recv_answer(req["msg_id"])[1]["type"], "response")

    def test_name_and_instance_id(self):
        c = self.peer(name="shop-ui")
        ids = [uid("pool") for _ in range(3)]
        pool = [self.peer(identity=i, register="pool") for i in ids]
        for _ in range(3):
            req = c.request("pick", payload={"instance": ids[2]})
            _, got = pool[2].recv()
            self.assertEqual(got["msg_id"], req["msg_id"])
            pool[2].answer(got)
            c.recv_answer(req["msg_id"])
        for p in pool[:2]:
            p.expect_nothing(0)
        # an id that holds no "pool": round-robin among pool's instances
        outsider = self.peer(identity=uid("outsider"), register=uid("other"))
        req = c.request("pick", payload={"instance": outsider.sock.getsockopt_string(bp.zmq.IDENTITY)})
        got = [p for p in pool if p.recv_raw(0.5) is not None]
        self.assertEqual(len(got), 1)
        outsider.expect_nothing(0)

    def test_list_for_a_request_is_an_order_of_preference(self):
        c = self.peer(name="shop-ui")
        req = c.request("prefer")
        self.expectError(c, "no_such_service", correlation_id=req["msg_id"])
        backup = self.peer(register="backup")
        req = c.request("prefer")
        _, got = backup.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        primary = self.peer(register="primary")
        req = c.request("prefer")
        _, got = primary.recv()
        self.assertEqual(got["msg_id"], req["msg_id"])
        primary.answer(got)
        [(_, answer)] = [c.recv()]
        self.assertEqual(answer["correlation_id"], req["msg_id"])
        backup.expect_nothing(0.1)
        c.expect_nothing(0.1)

    def test_list_for_an_event_fans_out(self):
        c = self.peer(name="shop-ui")
        a = [self.peer(register="fan-a") for _ in range(2)]
        b = self.peer(register="fan-b")
        ev = c.send(bp.msg("event", "shop-ui", "fanout", "tick"))
        got = [p for p in a if p.recv_raw(0.5) is not None]
        self.assertEqual(len(got), 1, "one instance of fan-a")
        frames, _ = b.recv()
        self.assertEqual(frames[-1], bp.dumps(ev))
        c.expect_nothing(0.1)

    def test_a_route_to_nobody_gets_no_such_service(self):
        c = self.peer(name="shop-ui")
        req = c.request("ghost")
        self.expectError(c, "no_such_service", correlation_id=req["msg_id"])

    def test_route_never_sees_broker_or_broadcast(self):
        c = self.peer(register=uid("sender"))
        listener = self.peer(register=uid("listener"))
        self.assertEqual(c.call_broker("ping")["type"], "response")
        ev = c.send(bp.msg("event", c.name, "broadcast", "hello"))
        frames = listener.recv_until(lambda m: m.get("msg_id") == ev["msg_id"])[0]
        self.assertEqual(frames[-1], bp.dumps(ev))

    def test_ctx(self):
        c = self.peer(name="shop-ui")
        ids = [uid("pool") for _ in range(2)]
        pool = [self.peer(identity=i, register="pool") for i in ids]
        held = c.request("pool")                 # not answered: load 1 on its instance
        busy = [p for p in pool if p.recv_raw(1.0) is not None]
        self.assertEqual(len(busy), 1)
        start = len(self.broker.log_text())
        c.request("report")
        m = self.broker.wait_for_log(r"CTX (\{.*\})", 2.0, start)
        self.assertTrue(m, self.broker.log_text())
        ctx = json.loads(m.group(1))
        loads = {i["id"]: i["load"] for i in ctx["instances"]}
        busy_id = busy[0].sock.getsockopt_string(bp.zmq.IDENTITY)
        self.assertEqual(loads, {i: (1 if i == busy_id else 0) for i in ids})
        self.assertEqual((ctx["has"], ctx["has_not"], ctx["none"]), (True, False, 0))
        self.assertIn("pool", ctx["services"])
        self.assertEqual(len(ctx["services"]), len(set(ctx["services"])))
        self.assertLessEqual(set(bp.services(c)), set(ctx["services"]) | {"new-name"})
        del held


class RegisterHooksTest(HooksCase):
    def test_on_register_refusal_gets_denied(self):
        p = self.peer()
        name = uid("blocked")
        m = p.send(bp.msg("register", name, "broker", "register"))
        body = self.expectError(p, "denied", correlation_id=m["msg_id"])
        self.assertEqual(body["payload"]["message"], "blocked names stay off this bus")
        self.assertNotIn(name, bp.services(self.peer(name="shop-ui")))
        other = uid("fine")
        p.register(other)
        self.assertIn(other, bp.services(p))

    def test_on_register_sees_the_peer(self):
        ident = uid("peer")
        first, second = uid("first"), uid("second")
        start = len(self.broker.log_text())
        p = self.peer(identity=ident, register=first)
        p.register(second)
        self.assertTrue(self.broker.wait_for_log(
            r"REGISTER %s id=%s names=%s\n" % (second, ident, first), 1.0, start),
            self.broker.log_text()[start:])

    def test_on_unregister_on_unregister_and_on_disconnect(self):
        ident = uid("peer")
        a, b = uid("a"), uid("b")
        p = self.peer(identity=ident, register=a)
        p.register(b)
        start = len(self.broker.log_text())
        self.assertEqual(p.unregister(a)["type"], "response")
        self.assertTrue(self.broker.wait_for_log(r"UNREGISTER %s id=%s" % (a, ident), 1.0, start))
        p.close()
        self.assertTrue(self.broker.wait_for_log(r"UNREGISTER %s id=%s" % (b, ident), 3.0, start),
                        self.broker.log_text()[start:])


if __name__ == "__main__":
    bp.main()
