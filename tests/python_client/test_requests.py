#!/usr/bin/python3
"""smartshop.Client against the real broker: correlation under many
concurrent requests, timeouts (ours and the broker's), ttl_ms, futures,
events, broadcasts, nested requests, closing with requests waiting."""
import concurrent.futures
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp, unique  # noqa: E402

import smartshop  # noqa: E402
from smartshop import RequestTimeout, StoppedError  # noqa: E402


class CorrelationTest(support.BusTestCase):
    def test_many_concurrent_requests_from_many_threads_each_get_their_own_answer(self):
        name = unique("py-corr")

        def slow_echo(req):
            time.sleep(random.random() * 0.002)     # answers come back out of order
            return {"echo": req.payload, "by": threading.current_thread().name}

        self.service(name, {"echo": slow_echo}, workers=8)
        c = self.client()
        # at most 800 in flight: below the broker's queue bound per peer (1000,
        # D4), past which the service's share is refused with busy
        per_thread, threads = 100, 8

        def worker(t):
            futs = [(i, c.request_async(name, "echo", {"t": t, "i": i}, timeout=30 * SLOW))
                    for i in range(per_thread)]
            for i, f in futs:
                self.assertEqual(f.result()["echo"], {"t": t, "i": i})
            for i in range(20):                     # and blocking ones in between
                self.assertEqual(c.request(name, "echo", [t, i], timeout=30 * SLOW)["echo"], [t, i])
            return per_thread + 20

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            done = sum(pool.map(worker, range(threads)))
        self.assertEqual(done, threads * (per_thread + 20))
        self.assertEqual(c._engine.pending, {})    # nothing left waiting

    def test_answers_in_reverse_order_reach_the_right_futures(self):
        name = unique("py-rev")
        svc = self.peer(register=name)             # a raw service that holds its answers
        c = self.client()
        futs = [c.request_async(name, "n", i, timeout=10 * SLOW) for i in range(50)]
        got = [svc.recv_until(lambda b: b.get("type") == "request", 5 * SLOW)[1] for _ in futs]
        for req in reversed(got):
            svc.answer(req, payload={"n": req["payload"]})
        self.assertEqual([f.result(10 * SLOW) for f in futs], [{"n": i} for i in range(50)])


class TimeoutTest(support.BusTestCase):
    def test_local_timeout_when_the_service_is_silent(self):
        name = unique("py-silent")
        svc = self.peer(register=name)
        c = self.client()
        start = time.monotonic()
        with self.assertRaises(RequestTimeout) as cm:
            c.request(name, "x", timeout=0.3, ttl_ms=30000)
        took = time.monotonic() - start
        self.assertIsNone(cm.exception.reply)      # no answer at all: ours
        self.assertEqual(cm.exception.code, "timeout")
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertGreaterEqual(took, 0.29)
        self.assertLess(took, 0.3 + 1.5 * SLOW)
        req = svc.recv_until(lambda b: b.get("type") == "request")[1]
        self.assertEqual(req["ttl_ms"], 30000)
        svc.answer(req, payload="late")            # a late answer is dropped...
        self.assertEqual(c.call_broker("ping")["status"], "ok")   # ...and the client goes on

    def test_the_brokers_timeout_carries_its_reply(self):
        name = unique("py-silent")
        self.peer(register=name)
        c = self.client()
        start = time.monotonic()
        with self.assertRaises(RequestTimeout) as cm:
            c.request(name, "x", timeout=10 * SLOW, ttl_ms=200)
        self.assertLess(time.monotonic() - start, 5 * SLOW)
        self.assertEqual(cm.exception.src, "broker")
        self.assertEqual(cm.exception.reply["type"], "error")

    def test_ttl_ms_is_the_timeout_unless_given_and_is_checked(self):
        name = unique("py-ttl")
        svc = self.peer(register=name)
        c = self.client()
        for timeout, ttl, want in ((1.5, None, 1500), (1000.0, None, 300000), (1.0, 7, 7)):
            f = c.request_async(name, "x", timeout=timeout, ttl_ms=ttl)
            req = svc.recv_until(lambda b: b.get("type") == "request")[1]
            self.assertEqual(req["ttl_ms"], want)
            svc.answer(req, payload=want)
            if want != 7:
                self.assertEqual(f.result(5 * SLOW), want)
        for bad in (0, 300001, 1.5, "5", True):
            with self.assertRaises(ValueError):
                c.request_async(name, "x", ttl_ms=bad)
        for bad in (0, -1, float("inf"), "1"):
            with self.assertRaises(ValueError):
                c.request_async(name, "x", timeout=bad)
        with self.assertRaises(TypeError):          # not JSON: refused before it is sent
            c.request_async(name, "x", payload={1, 2})


class FutureAndEventTest(support.BusTestCase):
    def test_futures_callbacks_and_full_responses(self):
        name = unique("py-fut")
        self.service(name, {"echo": lambda req: req.payload})
        c = self.client(name="py-fut-client")
        seen = []
        done = threading.Event()
        f = c.request_async(name, "echo", {"x": 1})
        f.add_done_callback(lambda fut: (seen.append(fut.result()), done.set()))
        self.assertTrue(done.wait(5 * SLOW))
        self.assertEqual(seen, [{"x": 1}])
        full = c.request(name, "echo", 5, full=True)
        self.assertEqual((full.type, full.src, full.dst, full.payload), ("response", name,
                                                                          "py-fut-client", 5))
        self.assertRegex(full.correlation_id, bp.UUID_RE)

    def test_events_and_broadcasts(self):
        a, b = unique("py-ev-a"), unique("py-ev-b")
        got = {a: [], b: []}
        arrived = threading.Condition()
        svcs = {}
        for name in (a, b):
            svc = smartshop.Service(name, self.broker.endpoint)

            @svc.on_event("note")
            def note(ev, name=name):
                with arrived:
                    got[name].append((ev.src, ev.action, ev.payload))
                    arrived.notify_all()

            @svc.on_event()
            def other(ev, name=name):
                with arrived:
                    got[name].append(("other", ev.action, ev.payload))
                    arrived.notify_all()

            st = support.ServiceThread(svc)
            self._closers.append(st.stop)
            svcs[name] = st.wait_ready()
        sender = self.client()
        sender.register(unique("py-ev-sender"))
        sender.publish(a, "note", {"to": "a"})
        sender.broadcast("note", {"to": "all"})
        sender.publish(b, "misc", 1)
        want = {a: {(sender.name, "note", ("to", "a")), (sender.name, "note", ("to", "all"))},
                b: {(sender.name, "note", ("to", "all")), ("other", "misc", 1)}}

        def norm(items):
            return {(s, act, tuple(p.items())[0] if isinstance(p, dict) else p) for s, act, p in items}

        with arrived:
            ok = arrived.wait_for(lambda: all(norm(got[n]) == want[n] for n in want), 5 * SLOW)
        self.assertTrue(ok, got)
        # a broadcast does not come back to its sender; a refused event is logged
        back = []
        sender.on_event()(back.append)
        with self.assertLogs("smartshop", "WARNING") as logs:
            sender.publish(unique("py-nobody"), "note", 1)
            support.wait_until(lambda: logs.output, 3)
        self.assertIn("no_such_service", "\n".join(logs.output))
        self.assertEqual(sender.process(0.2), 0)
        self.assertEqual(back, [])

    def test_a_handler_may_ask_another_service(self):
        inner, outer = unique("py-inner"), unique("py-outer")
        self.service(inner, {"double": lambda req: req.payload * 2})
        outer_svc = smartshop.Service(outer, self.broker.endpoint)
        outer_svc.handler("quad")(lambda req: outer_svc.request(inner, "double", req.payload * 2))
        st = support.ServiceThread(outer_svc)
        self._closers.append(st.stop)
        st.wait_ready()
        self.assertEqual(self.client().request(outer, "quad", 3), 12)

    def test_close_fails_requests_still_waiting(self):
        name = unique("py-silent")
        self.peer(register=name)
        c = smartshop.Client(self.broker.endpoint)
        f = c.request_async(name, "x", timeout=30)
        time.sleep(0.1)
        c.close()
        with self.assertRaises(StoppedError):
            f.result(5)
        with self.assertRaises(StoppedError):
            c.request(name, "x")
        c.close()                                  # twice is fine


if __name__ == "__main__":
    bp.main()
