#!/usr/bin/python3
"""A policy that logs on every message cannot flood the broker's log: at
most 600 lines a minute per Lua state, the rest counted (issue 3,
containment; docs/policies.md). Lua's own warn goes the same way."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class ChattyPolicyTest(bp.PolicyTestCase):
    POLICY = '''
function filter(msg)
  log.info("chatty " .. msg.msg_id)
  warn("@on")
  warn("chatty warn")
end
'''

    def test_log_lines_are_bounded(self):
        p = self.peer()
        for _ in range(1000):
            m = p.request("broker", "ping", src="chatty-client")
            p.recv_answer(m["msg_id"])
        lines = [l for l in self.broker.log_lines() if "chatty" in l]
        self.assertLessEqual(len(lines), 600, "%d policy log lines" % len(lines))
        self.assertGreater(len(lines), 100)
        self.assertTrue(any("WARN" in l and "chatty warn" in l for l in lines))


if __name__ == "__main__":
    bp.main()
