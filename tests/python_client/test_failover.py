#!/usr/bin/python3
"""A failover list of brokers (docs/protocol.md section 10b), sync and
asyncio, against three real brokers on loopback ports killed with SIGKILL:
one connection at a time (CF1); names and topics registered again on the
next broker, visible in its list_services (CF2); requests waiting at the
killed broker fail once with BrokerLostError, long before their timeout
(CF3); back to a restarted broker when the second one dies (CF4); a first
endpoint with no broker at start (CF5); and one endpoint as before: a
timeout, never broker_lost."""
import asyncio
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp, unique  # noqa: E402

import smartshop  # noqa: E402
import smartshop.asyncio as ssa  # noqa: E402

# dead_after well above the bounds the tests put on a failover, so that
# meeting them shows the socket monitor at work, not the silence rule
FAST = dict(heartbeat=0.2 * SLOW, dead_after=6.0 * SLOW, reconnect_max=1.0)
MOVE_BOUND = 2.0 * SLOW


def listed_at(broker, name):
    """Instances of `name` that `broker` lists (asked on a connection of its own)."""
    with smartshop.Client(broker.endpoint) as c:
        return support.listed(c, name)


class FailoverTestCase(unittest.TestCase):
    def setUp(self):
        self.ports = [bp.free_port() for _ in range(3)]
        self.brokers = [bp.Broker(port=p) for p in self.ports]
        self.closers = []

    def tearDown(self):
        for close in reversed(self.closers):
            close()
        for b in self.brokers:
            b.cleanup()

    def endpoints(self, *which):
        return ",".join(self.brokers[i].endpoint for i in which)

    def kill(self, i):
        self.brokers[i].kill()

    def restart(self, i):
        """Broker i again on its port (tried again if someone's outgoing
        connection holds that port for a moment on a shared machine)."""
        self.brokers[i].cleanup()
        for attempt in range(5):
            try:
                self.brokers[i] = bp.Broker(port=self.ports[i])
                return
            except AssertionError:
                if attempt == 4:
                    raise
                time.sleep(0.3)

    def wait_listed(self, i, name, want=1, timeout=3.0):
        return support.wait_until(lambda: listed_at(self.brokers[i], name) == want, timeout)

    def client(self, endpoint, **kw):
        c = smartshop.Client(endpoint, **dict(FAST, **kw))
        self.closers.append(c.close)
        return c


class SyncFailoverTest(FailoverTestCase):
    def test_service_moves_on_registers_again_and_comes_back(self):
        name, moves, topics, moved_at = unique("py-fo"), [], [], []

        def on_failover(ev):
            moved_at.append(time.monotonic())
            moves.append(ev)
        svc = smartshop.Service(name, self.endpoints(0, 1), on_failover=on_failover, **FAST)
        svc.handler("echo")(lambda req: req.payload)
        st = support.ServiceThread(svc)
        self.closers.append(st.stop)
        st.wait_ready()
        svc.subscribe("py-fo.*", topics.append)
        self.assertEqual(svc.endpoints, [self.brokers[0].endpoint, self.brokers[1].endpoint])
        self.assertEqual(svc.endpoint, self.brokers[0].endpoint)
        # one connection at a time: held at A only
        self.assertEqual(listed_at(self.brokers[0], name), 1)
        self.assertEqual(listed_at(self.brokers[1], name), 0)

        t0 = time.monotonic()
        self.kill(0)
        self.assertTrue(self.wait_listed(1, name), "not registered on the next broker")
        took = moved_at[0] - t0
        print("sync: moved to the next broker %.0f ms after the kill" % (took * 1000))
        self.assertLess(took, MOVE_BOUND)
        self.assertEqual(svc.endpoint, self.brokers[1].endpoint)
        self.assertEqual(len(moves), 1)
        self.assertEqual((moves[0].from_endpoint, moves[0].to_endpoint, moves[0].reason),
                         (self.brokers[0].endpoint, self.brokers[1].endpoint, "disconnected"))
        c = self.client(self.brokers[1].endpoint)
        self.assertEqual(c.request(name, "echo", {"n": 1}, timeout=2 * SLOW), {"n": 1})
        # its topic subscription came along (published until it arrives: the
        # subscribe may still be on its way)
        def topic_arrives():
            c.publish_topic("py-fo.created", "created", 1)
            time.sleep(0.05)
            return topics
        self.assertTrue(support.wait_until(topic_arrives, 3))

        # back to A, restarted, when B dies
        self.restart(0)
        self.kill(1)
        self.assertTrue(self.wait_listed(0, name), "not registered again on the first broker")
        self.assertEqual(len(moves), 2)
        self.assertEqual(moves[1].to_endpoint, self.brokers[0].endpoint)
        c2 = self.client(self.brokers[0].endpoint)
        self.assertEqual(c2.request(name, "echo", 2, timeout=2 * SLOW), 2)

    def test_waiting_requests_fail_once_with_broker_lost(self):
        silent = unique("py-silent")
        holder = self.client(self.brokers[1].endpoint)
        holder.register(silent)                 # holds the name, never answers
        c = self.client(self.endpoints(1, 2))
        c.call_broker("ping")
        futures = [c.request_async(silent, "work", i, timeout=20) for i in range(3)]
        time.sleep(0.2)                         # in flight at B
        settled = []
        for f in futures:
            f.add_done_callback(settled.append)
        t0 = time.monotonic()
        self.kill(1)
        for f in futures:
            with self.assertRaises(smartshop.BrokerLostError) as cm:
                f.result(timeout=MOVE_BOUND + 1)
            self.assertEqual(cm.exception.code, "broker_lost")
            self.assertIsNone(cm.exception.reply)
        took = time.monotonic() - t0
        print("sync: 3 waiting requests failed %.0f ms after the kill" % (took * 1000))
        self.assertLess(took, MOVE_BOUND)
        self.assertEqual(c.endpoint, self.brokers[2].endpoint)
        self.assertEqual(c.call_broker("ping")["status"], "ok")
        time.sleep(0.3)
        self.assertEqual(len(settled), 3)       # once each, never again
        # a blocking request waiting when its broker dies
        silent2 = unique("py-silent2")
        self.client(self.brokers[2].endpoint).register(silent2)
        self.restart(1)
        killer = threading.Timer(0.5, self.kill, (2,))
        killer.start()
        with self.assertRaises(smartshop.BrokerLostError):
            c.request(silent2, "work", timeout=20)
        killer.join()
        self.assertEqual(c.endpoint, self.brokers[1].endpoint)

    def test_dead_first_endpoint_at_start(self):
        dead = "tcp://127.0.0.1:%d" % bp.free_port()
        name = unique("py-late")
        c = self.client(dead + "," + self.brokers[2].endpoint)
        c.register(name, timeout=3 * SLOW)      # carried to the second, not broker_lost
        self.assertEqual(c.endpoint, self.brokers[2].endpoint)
        self.assertEqual(listed_at(self.brokers[2], name), 1)

    def test_one_endpoint_as_before(self):
        silent = unique("py-one")
        self.client(self.brokers[0].endpoint).register(silent)
        moves = []
        c = self.client(self.brokers[0].endpoint, on_failover=moves.append)
        c.call_broker("ping")
        threading.Timer(0.3, self.kill, (0,)).start()
        t0 = time.monotonic()
        with self.assertRaises(smartshop.RequestTimeout):
            c.request(silent, "work", timeout=1.5 * SLOW)
        self.assertGreaterEqual(time.monotonic() - t0, 1.5 * SLOW - 0.05)
        self.restart(0)
        self.assertTrue(support.wait_until(lambda: _pings(c), 5))
        self.assertEqual((c.endpoint, moves), (self.brokers[0].endpoint, []))

    def test_endpoint_lists_are_checked(self):
        for bad in (",", "tcp://127.0.0.1:1,nonsense", ["tcp://127.0.0.1:1", 5],
                    "tcp://127.0.0.1:1#short"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                smartshop.Client(bad)
        key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        with self.assertRaises(ValueError):     # a broker key but no key pair
            smartshop.Client("tcp://127.0.0.1:1#" + key)
        c = self.client([" tcp://127.0.0.1:1 ", "tcp://127.0.0.1:2"])
        self.assertEqual(c.endpoints, ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"])


def _pings(c):
    try:
        return c.call_broker("ping", timeout=0.3)["status"] == "ok"
    except smartshop.SmartshopError:
        return False


class AsyncFailoverTest(FailoverTestCase):
    def test_asyncio_service_and_client_fail_over(self):
        name, silent = unique("py-afo"), unique("py-asilent")
        holder = self.client(self.brokers[0].endpoint)
        holder.register(silent)

        async def main():
            moves = []
            svc = ssa.Service(name, self.endpoints(0, 1), on_failover=moves.append, **FAST)

            @svc.handler("echo")
            async def echo(req):
                return req.payload

            ready = asyncio.Event()
            serving = asyncio.get_running_loop().create_task(
                svc.run(signals=(), on_ready=ready.set))
            await asyncio.wait_for(ready.wait(), 5 * SLOW)

            async def coro_hook(ev):
                moves.append(("async", ev.reason))

            c = ssa.Client(self.endpoints(0, 1), on_failover=coro_hook, **FAST)
            await c.start()
            await c.call_broker("ping")
            waiting = c.request_nowait(silent, "work", timeout=20)
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            self.kill(0)
            with self.assertRaises(smartshop.BrokerLostError):
                await asyncio.wait_for(waiting, 3 * SLOW)
            took = time.monotonic() - t0
            print("asyncio: a waiting request failed %.0f ms after the kill" % (took * 1000))
            self.assertLess(took, MOVE_BOUND)
            self.assertEqual(c.endpoint, self.brokers[1].endpoint)
            deadline = time.monotonic() + 3 * SLOW
            while listed_at(self.brokers[1], name) != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.assertEqual(await c.request(name, "echo", {"a": 1}, timeout=2 * SLOW), {"a": 1})
            self.assertIn(("async", "disconnected"), moves)
            self.assertEqual([m.to_endpoint for m in moves if not isinstance(m, tuple)],
                             [self.brokers[1].endpoint])
            await c.close()
            svc.stop()
            await asyncio.wait_for(serving, 5 * SLOW)

        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()
