#!/usr/bin/python3
"""Item 6 of the hardening issue: the sandbox exposed lua-cjson's global
setters. json.decode_max_depth(1e7) (or encode_max_depth) followed by a deep
document overflowed the C stack: SIGSEGV. Now `json` holds encode, decode
and null only; calling a setter is an ordinary error (service_error /
policy_error), and deep documents meet lua-cjson's default limit.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

DEPTH = 2000000

SERVICE = r'''
local deep_text = string.rep("[", %(depth)d) .. string.rep("]", %(depth)d)
local function deep_table()
  local t = {}
  for i = 1, %(depth)d // 10 do t = {t} end     -- 200000 levels: within the memory cap
  return t
end
local actions = {}
function actions.decode_setter()
  pcall(json.decode_max_depth, 1e7)      -- refused or not, then the deep text
  return {ok = pcall(json.decode, deep_text)}
end
function actions.encode_setter()
  pcall(json.encode_max_depth, 1e7)
  return {ok = pcall(json.encode, deep_table())}
end
function actions.call_setter() json.decode_max_depth(1e7) end
function actions.keys()
  local keys = {}
  for k in pairs(json) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end
function actions.roundtrip(msg) return json.decode(json.encode(msg.payload)) end
return {name = "json-setters", on_request = function(msg) return actions[msg.action](msg) end}
''' % {"depth": DEPTH}

POLICY = r'''
function filter(msg)
  if msg.action == "policy_setter" then
    pcall(json.decode_max_depth, 1e7)
    pcall(json.decode, string.rep("[", %(depth)d) .. string.rep("]", %(depth)d))
    return false, "done"
  end
end
''' % {"depth": DEPTH}


class JsonSettersServiceTest(bp.LuaServicesTestCase):
    EXTRA_ARGS = ("--lua-instruction-limit", "50000000")

    @classmethod
    def make_services_dir(cls):
        d = bp.services_dir({})
        with open(os.path.join(d, "json_setters.lua"), "w") as f:
            f.write(SERVICE)
        return d

    def ask(self, action, payload=None):
        client = self.peer(name="js-client")
        m = client.request("json-setters", action, payload=payload)
        return client.recv_answer(m["msg_id"], 10.0 * bp.SLOW)[1]

    def test_only_encode_decode_and_null(self):
        # services' json is lua_json's (docs/lua-services.md, "JSON fidelity"):
        # none of lua-cjson's setters, and json.array to mark an array
        body = self.ask("keys")
        self.assertEqual(body.get("payload"), ["array", "decode", "encode", "null"], bp.dump(body))
        body = self.ask("roundtrip", {"a": [1, 2, {"b": None}]})
        self.assertEqual(body.get("payload"), {"a": [1, 2, {"b": None}]}, bp.dump(body))

    def test_deep_decode_after_the_setter(self):
        body = self.ask("decode_setter")
        self.assertAlive()
        self.assertEqual(body.get("payload"), {"ok": False}, bp.dump(body))

    def test_deep_encode_after_the_setter(self):
        body = self.ask("encode_setter")
        self.assertAlive()
        self.assertEqual(body.get("payload"), {"ok": False}, bp.dump(body))

    def test_calling_a_setter_is_a_service_error(self):
        mark = len(self.broker.log_text())
        body = self.ask("call_setter")
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        self.assertTrue(self.broker.wait_for_log(r"on_request failed: .*decode_max_depth",
                                                 2.0 * bp.SLOW, mark), self.broker.log_text()[mark:])
        self.assertAlive()


class JsonSettersPolicyTest(bp.PolicyTestCase):
    POLICY = POLICY
    EXTRA_ARGS = ("--lua-instruction-limit", "50000000")

    def test_policy_deep_decode_after_the_setter(self):
        client = self.peer(name="jsp-client")
        m = client.request("broker", "policy_setter")
        _, body = client.recv_answer(m["msg_id"], 10.0 * bp.SLOW)
        self.assertAlive()
        self.assertError(body, "denied")
        self.assertEqual(client.call_broker("ping").get("type"), "response")


if __name__ == "__main__":
    bp.main()
