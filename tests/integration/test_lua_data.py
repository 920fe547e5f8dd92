#!/usr/bin/python3
"""Lua services that keep data (docs/lua-services.md: "JSON fidelity",
"Reload hand-over", "Late answers"), against the real broker:

- JSON round trips keep empty arrays as arrays, integers exact within 64
  bits (and larger ones as their digits), floats as floats;
- on_reload(old_state) gets the old version's state across a reload, and
  a failing on_reload refuses the reload (the old version keeps its state);
- bus.later(msg) answers after the handler returned, from a bus.request
  callback or a timer, exactly once, and not after the request's deadline.
Fixtures: tests/lua_services/keeper_*.lua, later.lua."""
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402

LIVE = 2.0 * bp.SLOW


def fixture(name):
    return os.path.join(bp.LUA_FIXTURES, name)


class Base(bp.LuaServicesTestCase):
    SERVICE_FILES = {"keeper.lua": fixture("keeper_v1.lua"), "later.lua": fixture("later.lua")}

    def ask(self, client, dst, action, payload=None, raw=False, timeout=3.0, **extra):
        m = client.request(dst, action, payload, **extra)
        frames, body = client.recv_answer(m["msg_id"], timeout * bp.SLOW)
        return (frames[-1].decode(), body) if raw else body

    def replace(self, source, comment=None):
        tmp = os.path.join(self.dir, ".keeper.lua.tmp")
        shutil.copy(fixture(source), tmp)
        if comment:
            with open(tmp, "a") as f:
                f.write(comment + "\n")
        os.rename(tmp, os.path.join(self.dir, "keeper.lua"))


class JsonFidelity(Base):
    DOC = ('{"items":[],"nested":{"empty":[],"obj":{}},"big":12345678901234567890,'
           '"i64":9223372036854775807,"exact":9007199254740993,"neg":-42,"f":2.5,'
           '"whole":3.0,"tags":["a"],"nil":null}')

    def test_stored_and_returned_as_it_was(self):
        client = self.peer(name="fid-client")
        doc = json.loads(self.DOC)
        body = self.ask(client, "keeper", "put", {"k": "d", "v": doc})
        self.assertEqual(body["type"], "response", bp.dump(body))
        text, body = self.ask(client, "keeper", "get", {"k": "d"}, raw=True)
        payload = json.loads(text)["payload"]
        self.assertEqual(payload, doc)
        for piece in ('"items":[]', '"empty":[]', '"obj":{}', '12345678901234567890',
                      '9223372036854775807', '9007199254740993', '"whole":3.0', '"tags":["a"]'):
            self.assertIn(piece, text)
        self.assertIsInstance(payload["items"], list)
        self.assertIsInstance(payload["big"], int)

    def test_integers_are_lua_integers(self):
        client = self.peer(name="fid-client2")
        body = self.ask(client, "keeper", "add", {"k": "n", "n": 9007199254740993})
        body = self.ask(client, "keeper", "add", {"k": "n", "n": 1})
        self.assertEqual(body["payload"]["n"], 9007199254740994)         # not 2^53
        body = self.ask(client, "keeper", "types",
                        {"i": 3, "f": 3.5, "a": [], "big": 18446744073709551615})
        self.assertEqual(body["payload"], {"i": "integer", "f": "float", "a": True,
                                           "big": "18446744073709551615"})

    def test_json_encode_decode_in_the_service(self):
        client = self.peer(name="fid-client3")
        text, body = self.ask(client, "keeper", "roundtrip", {"text": self.DOC}, raw=True)
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(json.loads(text)["payload"], json.loads(self.DOC))
        self.assertIn('"items":[]', text)
        self.assertIn("12345678901234567890", text)


class ReloadHandOver(Base):
    def test_on_reload_gets_the_old_state(self):
        client = self.peer(name="reload-client")
        self.ask(client, "keeper", "put", {"k": "cart", "v": {"lines": [], "id": 9007199254740993}})
        self.assertEqual(self.ask(client, "keeper", "count")["payload"], {"version": 1, "calls": 2})
        mark = len(self.broker.log_text())
        self.replace("keeper_v2.lua")
        self.assertTrue(self.broker.wait_for_log(r"service keeper reloaded", LIVE, mark),
                        self.broker.log_text()[mark:])
        self.assertEqual(self.ask(client, "keeper", "count")["payload"], {"version": 2, "calls": 3})
        text, _ = self.ask(client, "keeper", "get", {"k": "cart"}, raw=True)
        self.assertIn('"lines":[]', text)
        self.assertIn("9007199254740993", text)
        # a reload whose on_reload fails is refused: version 2 keeps its state
        mark = len(self.broker.log_text())
        self.replace("keeper_bad_reload.lua")
        self.assertTrue(self.broker.wait_for_log(
            r"service keeper.lua refused, the previous version keeps running: .*on_reload failed: "
            r".*cannot take table", LIVE, mark), self.broker.log_text()[mark:])
        self.assertEqual(self.ask(client, "keeper", "count")["payload"], {"version": 2, "calls": 5})
        # and version 2 hands over to itself again (its on_save)
        mark = len(self.broker.log_text())
        self.replace("keeper_v2.lua")
        self.assertTrue(self.broker.wait_for_log(r"service keeper reloaded", LIVE, mark))
        self.assertEqual(self.ask(client, "keeper", "count")["payload"], {"version": 2, "calls": 6})


class ReloadRefusedOnSave(Base):
    """The old version's state cannot be handed over (on_save raises, or
    what it gives is not JSON): the reload is refused and the old version
    keeps running with its state, until a state that is JSON comes."""

    def test_a_state_that_is_not_json_refuses_the_reload(self):
        client = self.peer(name="save-client")
        self.ask(client, "keeper", "put", {"k": "cart", "v": {"lines": []}})
        mark = len(self.broker.log_text())
        self.replace("keeper_bad_save.lua")         # from version 1 (its `state`)
        self.assertTrue(self.broker.wait_for_log(r"service keeper reloaded", LIVE, mark))
        self.assertEqual(self.ask(client, "keeper", "count")["payload"], {"version": "save", "calls": 2})
        calls = 2
        for how, why in (("function", r"cannot encode a function"),
                         ("cycle", r"nested more than 64"),
                         ("deep", r"nested more than 64"),
                         ("raise", r"on_save broken on purpose")):
            with self.subTest(how=how):
                self.assertEqual(self.ask(client, "keeper", "poison", {"how": how})["payload"], {"how": how})
                calls += 1
                mark = len(self.broker.log_text())
                self.replace("keeper_v2.lua", "-- edited: " + how)
                self.assertTrue(self.broker.wait_for_log(
                    r"service keeper.lua refused, the previous version keeps running: .*"
                    r"the old version's state cannot be handed over \(on_save\): .*" + why, LIVE, mark),
                    self.broker.log_text()[mark:])
                calls += 1
                self.assertEqual(self.ask(client, "keeper", "count")["payload"],
                                 {"version": "save", "calls": calls}, "the old version, its state kept")
        self.ask(client, "keeper", "poison", {"how": "none"})
        mark = len(self.broker.log_text())
        self.replace("keeper_v2.lua", "-- edited: none")
        self.assertTrue(self.broker.wait_for_log(r"service keeper reloaded", LIVE, mark),
                        self.broker.log_text()[mark:])
        self.assertEqual(self.ask(client, "keeper", "count")["payload"],
                         {"version": 2, "calls": calls + 2}, "the calls handed over")
        text, _ = self.ask(client, "keeper", "get", {"k": "cart"}, raw=True)
        self.assertIn('"lines":[]', text)


class LateAnswers(Base):
    def test_from_a_request_callback(self):
        client = self.peer(name="late-client")
        pricing = self.peer(identity="pricing-1", register="pricing")
        m = client.request("later", "quote", {"sku": "A1"})
        _, req = pricing.recv(timeout=3 * bp.SLOW)
        self.assertEqual(req["payload"], {"sku": "A1"})
        client.expect_nothing(0.2)                  # on_request returned; no answer yet
        pricing.answer(req, payload={"price": 12})
        _, body = client.recv_answer(m["msg_id"], 3 * bp.SLOW)
        self.assertEqual(body["type"], "response", bp.dump(body))
        self.assertEqual(body["payload"], {"sku": "A1", "price": 12})
        self.assertEqual(body["src"], "later")
        self.assertEqual(body["action"], "quote")
        client.expect_nothing(0.3)                  # exactly once
        # the callback's error becomes the answer's error
        m = client.request("later", "quote", {"sku": "B2"})
        _, req = pricing.recv(timeout=3 * bp.SLOW)
        pricing.answer(req, type="error", payload={"code": "no_price", "message": "none"})
        _, body = client.recv_answer(m["msg_id"], 3 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "upstream_failed", bp.dump(body))
        self.assertEqual(body["payload"]["message"], "pricing: no_price")

    def test_from_a_timer_exactly_once(self):
        client = self.peer(name="late-client2")
        body = self.ask(client, "later", "timer", {"ms": 50, "text": "t1"})
        self.assertEqual(body["payload"], {"text": "t1"})
        mark = len(self.broker.log_text())
        m = client.request("later", "twice")
        _, body = client.recv_answer(m["msg_id"], 3 * bp.SLOW)
        self.assertEqual(body["payload"], "first")
        self.assertTrue(self.broker.wait_for_log(
            r"twice: true false this request was answered already", LIVE, mark))
        client.expect_nothing(0.3)

    def test_the_deadline_still_holds(self):
        client = self.peer(name="late-client3")
        mark = len(self.broker.log_text())
        m = client.request("later", "timer", {"ms": int(800 * bp.SLOW), "text": "too late"},
                           ttl_ms=int(200 * bp.SLOW))
        body = self.expectError(client, "timeout", correlation_id=m["msg_id"], timeout=3 * bp.SLOW)
        self.assertTrue(self.broker.wait_for_log(
            r"late answer too late: false the request's deadline passed", 3 * LIVE, mark),
            self.broker.log_text()[mark:])
        client.expect_nothing(0.3)                  # no second answer

    def test_a_handler_that_fails_after_later_is_answered_once(self):
        client = self.peer(name="late-client4")
        mark = len(self.broker.log_text())
        m = client.request("later", "fail")
        _, body = client.recv_answer(m["msg_id"], 3 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        self.assertTrue(self.broker.wait_for_log(
            r"after fail: false this request was answered already", LIVE, mark))
        client.expect_nothing(0.3)

    def test_a_reload_answers_what_the_old_version_held(self):
        client = self.peer(name="late-client5")
        m = client.request("later", "hold")
        client.expect_nothing(0.2)
        mark = len(self.broker.log_text())
        tmp = os.path.join(self.dir, ".later.lua.tmp")
        with open(fixture("later.lua")) as f:
            text = f.read()
        with open(tmp, "w") as f:
            f.write(text + "\n-- edited\n")
        os.rename(tmp, os.path.join(self.dir, "later.lua"))
        self.assertTrue(self.broker.wait_for_log(r"service later reloaded", LIVE, mark))
        _, body = client.recv_answer(m["msg_id"], 3 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        self.assertIn("reloaded before it answered", body["payload"]["message"])


if __name__ == "__main__":
    bp.main()
