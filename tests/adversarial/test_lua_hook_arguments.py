#!/usr/bin/python3
"""Item 5 of the hardening issue: hook arguments were pushed outside the
protected call. A policy that keeps what its memory bomb allocated and
swallows the error with pcall leaves its state at the memory cap; the next
hook's lua_pushstring (on_register's name, on_unregister's peer table) then
failed outside any protected call and Lua aborted the broker. on_unregister
runs on every disconnect, so any disconnect could kill it. Now arguments are
pushed inside the call: that one hook call fails (policy_error for a
register, a log line for on_unregister) and the broker goes on.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import brokerproc as bp  # noqa: E402

MEMORY_LIMIT = 4 << 20

POLICY = r'''
hog = {}
-- big pieces, then ever smaller ones: the state ends a few bytes short of
-- its cap, and keeps all of it. Nothing outside the pcalls allocates (no
-- closure made per call), so the filter itself always returns.
local sizes = {4096, 256, 16, 1}
local function grow_strings(size)
  while true do hog[#hog + 1] = string.rep("x", size) .. #hog end
end
local function grow_tables() while true do hog[#hog + 1] = {} end end
local function fill()
  for k = 1, #sizes do
    pcall(grow_strings, sizes[k])
    pcall(grow_tables)
  end
end
function filter(msg)
  if msg.action == "fill" then fill() return false, "filled" end
  if msg.action == "free" then hog = {} return false, "freed" end
end
-- each needs a little memory of its own, so that at the cap it surely
-- fails inside its call (if its arguments fit at all)
function on_register(name, peer) local need = string.rep("y", 8192) .. name end
function on_unregister(name, peer) local need = string.rep("y", 8192) .. name end
'''


class HookArgumentsAtTheMemoryCapTest(bp.PolicyTestCase):
    POLICY = POLICY
    # a large budget: the fill must meet the memory cap, not the budget
    EXTRA_ARGS = ("--lua-memory-limit", str(MEMORY_LIMIT), "--lua-instruction-limit", "100000000")

    def fill(self, client):
        m = client.request("broker", "fill")
        _, body = client.recv_answer(m["msg_id"], 5.0 * bp.SLOW)
        return body

    def test_register_and_disconnect_with_the_policy_at_its_cap(self):
        client = self.peer(name="cap-client")
        victim = self.peer(register="cap-victim")        # registered before the bomb
        body = self.fill(client)
        self.assertEqual(bp.error_code(body), "denied", bp.dump(body) + self.broker.log_text()[-2000:])
        mark = len(self.broker.log_text())
        # on_register("cap-newcomer-<uuid>", peer): the name and the peer
        # table no longer fit in the policy's state
        newcomer = self.peer()
        name = bp.new_id("cap-newcomer")
        m = newcomer.send(bp.msg("register", name, "broker", "register"))
        _, body = newcomer.recv_answer(m["msg_id"], 3.0 * bp.SLOW)
        self.assertAlive()
        self.assertIn(bp.error_code(body), ("policy_error",), bp.dump(body))
        self.assertTrue(self.broker.wait_for_log(r"on_register\(\) failed: memory limit", 2.0 * bp.SLOW,
                                                 mark), self.broker.log_text()[mark:])
        # a disconnect: on_unregister(name, peer) at the cap
        victim.close()
        self.assertTrue(self.broker.wait_for_log(r"on_unregister\(\) failed: memory limit",
                                                 3.0 * bp.SLOW, mark), self.broker.log_text()[mark:])
        self.assertAlive()
        # the state is still the policy's: once it lets go, hooks work again
        m = client.request("broker", "free")
        _, body = client.recv_answer(m["msg_id"], 3.0 * bp.SLOW)
        self.assertEqual(bp.error_code(body), "denied", bp.dump(body))
        later = self.peer(register=bp.new_id("cap-later"))
        self.assertAlive()
        body = later.call_broker("ping", timeout=2.0 * bp.SLOW)
        self.assertEqual(body.get("type"), "response", bp.dump(body))

    def test_many_disconnects_at_the_cap(self):
        client = self.peer(name="cap-client2")
        peers = [self.peer(register=bp.new_id("cap-many")) for _ in range(5)]
        self.fill(client)
        for p in peers:
            p.close()
        time.sleep(0.3 * bp.SLOW)
        self.assertAlive()
        body = client.call_broker("ping", timeout=2.0 * bp.SLOW)
        self.assertAlive()
        self.assertIn(body.get("type"), ("response", "error"), bp.dump(body))
        m = client.request("broker", "free")
        client.recv_answer(m["msg_id"], 3.0 * bp.SLOW)


if __name__ == "__main__":
    bp.main()
