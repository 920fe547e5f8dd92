#!/usr/bin/python3
"""Item 7 of the hardening issue: work done inside C library calls escaped
the instruction budget and the memory cap. string.rep("", n) with a huge n
never returned, table.move({}, 1, n, 2) and table.remove on a table whose
__len is huge looped in C, json.encode of a tree of shared tables took
exponential time in a malloc'd buffer outside the cap, and filter()'s
returned table was encoded after its call, outside the budget. Now each
charges its work to the budget before doing it (the output buffer of
json.encode is checked against the memory left): the call fails with a
clear error saying what was refused, at once, and a bystander's round trips
stay answered meanwhile.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

MEMORY_LIMIT = 16 << 20
STALL_LIMIT = 0.1 * bp.SLOW
HICCUP_LIMIT = 1.0 * bp.SLOW      # one round trip may lose its core on a shared machine

SERVICE = r'''
local function shared_tree(levels)
  local t = {"leaf"}
  for i = 1, levels do t = {t, t} end
  return t
end
local actions = {}
function actions.rep_empty() return #string.rep("", 1 << 50) end
function actions.rep_sep() return #string.rep("", 1 << 40, "") end
function actions.move() return #table.move({}, 1, 1 << 40, 2) end
function actions.remove()
  return table.remove(setmetatable({}, {__len = function() return 1 << 40 end}), 1)
end
function actions.insert()
  table.insert(setmetatable({}, {__len = function() return 1 << 40 end}), 1, "x")
end
function actions.concat()
  return table.concat(setmetatable({}, {__index = function() return "" end}), "", 1, 1 << 40)
end
function actions.encode_shared() return #json.encode(shared_tree(40)) end
function actions.return_shared() return shared_tree(40) end       -- encoded by the broker
function actions.big_escape()
  -- 6 MB of control characters: lua-cjson reserves 6 bytes a byte, in
  -- plain malloc, before it writes a thing
  return #json.encode({string.rep("\1", 6 << 20)})
end
function actions.fine()
  local s, sum = string.rep("ab", 10000), 0
  for i = 1, #s do sum = sum + s:byte(i) + utf8.codepoint(s, i) end     -- charged per byte read
  return {ok = #json.encode(shared_tree(8)), rep = #string.rep("ab", 1000), sum = sum,
          len = utf8.len(s), head = {s:byte(1, 3)}}
end
return {name = "c-budget", on_request = function(msg) return actions[msg.action]() end}
'''

POLICY = r'''
function filter(msg)
  if msg.action == "filter_shared" then
    local t = msg:table()
    local tree = {"leaf"}
    for i = 1, 40 do tree = {tree, tree} end
    t.payload = tree
    return t                      -- the broker encodes it, after the call
  end
end
'''


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Bystander:
    """A remote service and a client: round trips through the broker."""

    def __init__(self, case, name):
        self.case = case
        self.name = name
        self.remote = case.peer(register=name)
        self.client = case.peer(name=name + "-client")

    def round_trip(self, i):
        start = time.monotonic()
        m = self.client.request(self.name, "ping", payload=i)
        _, req = self.remote.recv(5.0 * bp.SLOW)
        self.remote.answer(req, payload={"pong": i})
        _, body = self.client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
        self.case.assertEqual(body.get("payload"), {"pong": i})
        return time.monotonic() - start


class CBudgetServiceTest(bp.LuaServicesTestCase):
    EXTRA_ARGS = ("--lua-memory-limit", str(MEMORY_LIMIT))

    @classmethod
    def make_services_dir(cls):
        d = bp.services_dir({})
        with open(os.path.join(d, "c_budget.lua"), "w") as f:
            f.write(SERVICE)
        return d

    def test_each_refused_with_what_was_refused(self):
        client = self.peer(name="cb-client")
        cases = (("rep_empty", "string.rep"), ("rep_sep", "string.rep"), ("move", "table.move"),
                 ("remove", "table.remove"), ("insert", "table.insert"),
                 ("concat", "table.concat"), ("encode_shared", "json.encode"),
                 ("return_shared", "json.encode"))
        for action, what in cases:
            with self.subTest(action=action):
                mark = len(self.broker.log_text())
                start = time.monotonic()
                m = client.request("c-budget", action)
                _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
                self.assertLess(time.monotonic() - start, 1.0 * bp.SLOW)
                self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
                line = self.broker.wait_for_log(
                    r"c-budget \(c_budget\.lua\): on_request failed: .*instruction budget "
                    r"exhausted.*refused: %s" % what.replace(".", r"\."), 2.0 * bp.SLOW, mark)
                self.assertTrue(line, self.broker.log_text()[mark:])
                self.assertAlive()
        m = client.request("c-budget", "fine")
        _, body = client.recv_answer(m["msg_id"], 2.0 * bp.SLOW)
        # the same functions on sizes that fit the budget work as before
        self.assertEqual(body.get("payload", {}).get("rep"), 2000, bp.dump(body))
        self.assertEqual(body["payload"]["sum"], 2 * 10000 * (97 + 98), bp.dump(body))
        self.assertEqual(body["payload"]["len"], 20000)
        self.assertEqual(body["payload"]["head"], [97, 98, 97])
        self.assertGreater(body["payload"]["ok"], 1000)


    def test_encode_buffer_is_checked_against_the_memory_cap(self):
        client = self.peer(name="cb-mem")
        before = vm_hwm_kb(self.broker.proc.pid)
        mark = len(self.broker.log_text())
        m = client.request("c-budget", "big_escape")
        _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "service_error", bp.dump(body))
        grown = vm_hwm_kb(self.broker.proc.pid) - before
        # the string itself (6 MB) is inside the cap; lua-cjson's buffer
        # for it (36 MB) must never have been allocated
        self.assertLess(grown, 24 << 10, "peak RSS grew by %d kB" % grown)
        # refused by the budget (6 bytes reserved a byte) or the memory left
        self.assertTrue(self.broker.wait_for_log(r"on_request failed: .*json\.encode",
                                                 2.0 * bp.SLOW, mark), self.broker.log_text()[mark:])
        self.assertAlive()


class CBudgetBystanderTest(CBudgetServiceTest):
    """On a broker of its own: its 20 failures use up the log's 20 lines a
    minute, which the test above reads."""

    def test_each_refused_with_what_was_refused(self):
        pass

    def test_encode_buffer_is_checked_against_the_memory_cap(self):
        pass

    def test_bystander_answered_while_the_service_is_hostile(self):
        hostile = self.peer(name="cb-hostile")
        by = Bystander(self, "cb-bystander")
        by.round_trip(-1)
        sent = [hostile.request("c-budget", a)["msg_id"]
                for a in ("rep_empty", "move", "remove", "encode_shared", "return_shared") * 4]
        rtts = [by.round_trip(i) for i in range(30)]
        slow = [round(t * 1e3, 1) for t in rtts if t >= STALL_LIMIT]
        self.assertLessEqual(len(slow), 1, "bystander round trips over 100 ms: %s" % slow)
        self.assertLess(max(rtts), HICCUP_LIMIT, "a bystander's round trip took %.3f s" % max(rtts))
        codes = set()
        for msg_id in sent:
            _, body = hostile.recv_answer(msg_id, 5.0 * bp.SLOW)
            codes.add(bp.error_code(body))
        self.assertEqual(codes, {"service_error"})
        self.assertAlive()


class FilterResultBudgetTest(bp.PolicyTestCase):
    POLICY = POLICY

    def test_filter_result_encoded_under_the_budget(self):
        client = self.peer(name="fb-client")
        by = Bystander(self, "fb-bystander")
        by.round_trip(-1)
        mark = len(self.broker.log_text())
        rtts = []
        for i in range(5):
            start = time.monotonic()
            m = client.request("fb-bystander", "filter_shared", payload=i)
            _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
            self.assertError(body, "policy_error")
            self.assertLess(time.monotonic() - start, 1.0 * bp.SLOW)
            rtts.extend(by.round_trip(i * 10 + k) for k in range(3))
        slow = [round(t * 1e3, 1) for t in rtts if t >= STALL_LIMIT]
        self.assertLessEqual(len(slow), 1, "bystander round trips over 100 ms: %s" % slow)
        self.assertLess(max(rtts), HICCUP_LIMIT, "a bystander's round trip took %.3f s" % max(rtts))
        self.assertTrue(self.broker.wait_for_log(r"filter\(\) failed: .*instruction budget exhausted"
                                                 r".*refused: json\.encode", 2.0 * bp.SLOW, mark),
                        self.broker.log_text()[mark:])
        self.assertAlive()


if __name__ == "__main__":
    bp.main()
