#!/usr/bin/python3
"""Topics from a hosted Lua service (docs/lua-services.md, "Topics"): the
patterns its table declares are subscribed when it loads (queue groups
too), bus.subscribe/unsubscribe at run time, bus.publish reaching a
remote subscriber, a wildcard topic refused, and subscriptions kept across
a reload of the file."""
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokerproc as bp  # noqa: E402


class LuaTopicsTest(bp.LuaServicesTestCase):
    SERVICE_FILES = {"subscriber.lua": os.path.join(bp.LUA_FIXTURES, "subscriber.lua")}

    def ask(self, action, payload=None):
        c = self.peer(name="asker")
        m = c.request("lua-subscriber", action, payload, src="asker")
        _, body = c.recv_answer(m["msg_id"], timeout=3 * bp.SLOW)
        self.assertEqual(body["type"], "response", body)
        return body["payload"]

    def publish(self, topic, n=1):
        p = self.peer(name="publisher")
        for _ in range(n):
            p.send(bp.msg("event", "publisher", None, "x", {}, topic=topic))

    def seen(self, topic):
        return (self.ask("seen") or {}).get(topic, 0)

    def test_declared_patterns_are_subscribed(self):
        self.assertTrue(bp.wait_until(lambda: self.ask("seen") is not None, 5 * bp.SLOW))
        self.publish("order.created", 3)
        self.publish("job.run.now", 2)           # the group of one: every event
        self.publish("stock.low", 1)             # not subscribed
        self.assertTrue(bp.wait_until(lambda: self.seen("order.created") == 3 and
                                      self.seen("job.run.now") == 2, 5 * bp.SLOW))
        self.assertEqual(self.seen("stock.low"), 0)

    def test_subscribe_at_run_time_and_unsubscribe(self):
        self.assertTrue(self.ask("subscribe", {"topic": "price.*"}))
        self.assertTrue(bp.wait_until(lambda: (self.publish("price.changed"), self.seen("price.changed"))[1] > 0,
                                      5 * bp.SLOW))
        self.assertTrue(self.ask("unsubscribe", {"topic": "price.*"}))
        time.sleep(0.2)
        before = self.seen("price.changed")
        self.publish("price.changed", 3)
        time.sleep(0.3 * bp.SLOW)
        self.assertEqual(self.seen("price.changed"), before)

    def test_publish_reaches_a_remote_subscriber(self):
        sub = self.peer(name="remote-sub")
        self.assertEqual(sub.call_broker("subscribe", {"topic": "lua.>"}, src="remote-sub")["payload"]["status"], "ok")
        self.assertTrue(self.ask("publish", {"topic": "lua.hello", "n": 7}))
        _, ev = sub.recv(timeout=3 * bp.SLOW)
        self.assertEqual((ev["topic"], ev["src"], ev["payload"]), ("lua.hello", "lua-subscriber", {"n": 7}))

    def test_a_wildcard_topic_is_refused_in_the_handler(self):
        got = self.ask("bad")
        self.assertFalse(got["ok"])
        self.assertIn("not a topic", got["err"])

    def test_subscriptions_survive_a_reload(self):
        path = os.path.join(self.dir, "subscriber.lua")
        with open(path, "a") as f:
            f.write("\n-- edited\n")
        mark = len(self.broker.log_text())
        self.assertTrue(self.broker.wait_for_log(r"reloaded from subscriber\.lua", timeout=5 * bp.SLOW,
                                                 start=mark))
        time.sleep(0.2)
        before = self.seen("order.updated")
        self.publish("order.updated", 2)
        self.assertTrue(bp.wait_until(lambda: self.seen("order.updated") >= before + 2, 5 * bp.SLOW))


if __name__ == "__main__":
    bp.main()
