#!/usr/bin/python3
"""Topics from Python (docs/protocol.md section 8a, docs/python-api.md):
subscribe with wildcards and queue groups, publish_topic, refusals raised
with their code, unsubscribe, the asyncio flavour, a C publisher reaching a
Python subscriber, and subscriptions made again after a broker restart."""
import asyncio
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import FAST, SLOW, bp  # noqa: E402

import smartshop  # noqa: E402
import smartshop.asyncio as ssa  # noqa: E402
from smartshop import errors  # noqa: E402
from smartshop.topics import matches, topic_problem  # noqa: E402


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class Collector:
    """A subscriber client running its handlers on a thread."""

    def __init__(self, endpoint, **kw):
        self.client = smartshop.Client(endpoint, **FAST, **kw)
        self.got = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.client.run, daemon=True)

    def take(self, msg):
        with self.lock:
            self.got.append(msg)

    def start(self):
        self.thread.start()
        return self

    def topics(self):
        with self.lock:
            return [m.topic for m in self.got]

    def close(self):
        self.client.close()


class TopicsTest(bp.BrokerTestCase):

    def setUp(self):
        super().setUp()
        self.collectors = []

    def tearDown(self):
        for c in self.collectors:
            c.close()
        super().tearDown()

    def collector(self, *patterns, group=None):
        c = Collector(self.broker.endpoint)
        for p in patterns:
            c.client.subscribe(p, c.take, group=group)
        self.collectors.append(c)
        return c.start()

    def test_syntax_and_matching_agree_with_the_broker(self):
        self.assertIsNone(topic_problem("order.created"))
        self.assertIsNotNone(topic_problem("order.*"))
        self.assertIsNone(topic_problem("order.*", pattern=True))
        self.assertIsNotNone(topic_problem("order.>.x", pattern=True))
        self.assertTrue(matches("order.>", "order.created.eu"))
        self.assertFalse(matches("order.*", "order.created.eu"))
        self.assertFalse(matches("order.>", "order"))

    def test_subscribe_publish_and_wildcards(self):
        star = self.collector("order.*")
        tail = self.collector("order.>")
        with smartshop.Client(self.broker.endpoint) as pub:
            pub.publish_topic("order.created", "created", {"id": 1})
            pub.publish_topic("order.created.eu", "created", {"id": 2})
            self.assertTrue(wait_for(lambda: len(tail.topics()) == 2))
            self.assertEqual(star.topics(), ["order.created"])
            self.assertEqual(tail.got[0].payload, {"id": 1})
            with self.assertRaises(ValueError):
                pub.publish_topic("order.*", "x")

    def test_refusals_carry_their_code(self):
        with smartshop.Client(self.broker.endpoint) as c:
            with self.assertRaises(ValueError):
                c.subscribe("order.a*", lambda m: None)      # checked before sending
            with self.assertRaises(errors.RemoteError) as cm:
                c.unsubscribe("never.subscribed")
            self.assertEqual(cm.exception.code, "not_subscribed")

    def test_queue_group_shares_and_unsubscribe_stops(self):
        members = [self.collector("job.*", group="workers") for _ in range(3)]
        with smartshop.Client(self.broker.endpoint) as pub:
            for i in range(30):
                pub.publish_topic("job.run", "run", {"i": i})
            self.assertTrue(wait_for(lambda: sum(len(m.got) for m in members) == 30))
            self.assertTrue(all(m.got for m in members))
            members[0].client.unsubscribe("job.*", group="workers")
            before = len(members[0].got)
            others = 30 - before
            for i in range(9):
                pub.publish_topic("job.run", "run", {"i": i})
            # the 9 new events all go to the two members left
            self.assertTrue(wait_for(lambda: sum(len(m.got) for m in members[1:]) == others + 9))
            time.sleep(0.2)
            self.assertEqual(len(members[0].got), before)

    def test_asyncio_subscriber(self):
        got = []

        async def main():
            async with ssa.Client(self.broker.endpoint) as c:
                async def on_event(msg):
                    got.append(msg.topic)
                await c.subscribe("store.12.>", on_event)
                runner = asyncio.ensure_future(c.run())
                c.publish_topic("store.12.till.3", "sale", {})
                c.publish_topic("store.13.till.1", "sale", {})
                for _ in range(100):
                    if got:
                        break
                    await asyncio.sleep(0.02 * SLOW)
                c.stop()
                await runner
        # the asyncio client is its own publisher: the broker skips the
        # sender, so publish from another connection
        with smartshop.Client(self.broker.endpoint) as pub:
            t = threading.Thread(target=lambda: asyncio.run(main()))
            t.start()
            deadline = time.monotonic() + 5 * SLOW
            while t.is_alive() and time.monotonic() < deadline and not got:
                pub.publish_topic("store.12.till.3", "sale", {})
                pub.publish_topic("store.13.till.1", "sale", {})
                time.sleep(0.1)
            t.join(10 * SLOW)
        self.assertIn("store.12.till.3", got)
        self.assertNotIn("store.13.till.1", got)

    def test_a_ctl_publisher_reaches_a_python_subscriber(self):
        sub = self.collector("price.changed")
        ctl = os.path.join(os.path.dirname(bp.broker_path()), "smartshop-ctl")
        out = subprocess.run([ctl, "-e", self.broker.endpoint, "pub", "price.changed", "set", '{"sku": 4}'],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(wait_for(lambda: sub.topics() == ["price.changed"]))


class RestartTest(bp.FreshBrokerTestCase):

    def setUp(self):
        super().setUp()
        self.b = bp.Broker()

    def test_subscriptions_come_back_after_a_broker_restart(self):
        port = self.b.port
        c = Collector(self.b.endpoint)
        c.client.subscribe("stock.*", c.take)
        c.start()
        try:
            self.b.kill()
            self.b = bp.Broker(endpoint="tcp://127.0.0.1:%d" % port, port=port)
            with smartshop.Client(self.b.endpoint) as pub:
                self.assertTrue(wait_for(lambda: (pub.publish_topic("stock.low", "low", {}) and
                                                  bool(c.got)), timeout=10))
        finally:
            c.close()


if __name__ == "__main__":
    bp.main()
