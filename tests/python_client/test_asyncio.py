#!/usr/bin/python3
"""smartshop.asyncio against the real broker: many concurrent requests
from one loop, async handlers that await other requests, timeouts, error
classes, events and broadcasts, futures, closing."""
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import support  # noqa: E402
from support import SLOW, bp, unique  # noqa: E402

from smartshop import errors  # noqa: E402
from smartshop.asyncio import Client, Service  # noqa: E402


class AsyncioTest(bp.BrokerTestCase):
    def run_async(self, coro, timeout=60):
        asyncio.run(asyncio.wait_for(coro, timeout * SLOW))

    async def serve(self, name, handlers, events=None):
        svc = Service(name, self.broker.endpoint)
        for action, fn in handlers.items():
            svc.handler(action)(fn)
        for action, fn in (events or {}).items():
            svc.on_event(action)(fn)
        ready = asyncio.Event()
        task = asyncio.create_task(svc.run(signals=(), on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), 5 * SLOW)
        return svc, task

    def test_concurrent_requests_and_nested_async_handlers(self):
        async def main():
            inner, outer = unique("py-ai"), unique("py-ao")

            async def double(req):
                await asyncio.sleep(random.random() * 0.01)    # out of order
                return req.payload * 2

            async def quad(req):
                return await svc_outer.request(inner, "double", req.payload * 2)

            svc_inner, t1 = await self.serve(inner, {"double": double})
            svc_outer, t2 = await self.serve(outer, {"quad": quad})
            async with Client(self.broker.endpoint) as c:
                # 500 at once: under the broker's queue to one peer (--send-hwm,
                # 1000), which a loaded machine's slow reader would fill (busy)
                got = await asyncio.gather(*[c.request(inner, "double", i, timeout=30 * SLOW)
                                             for i in range(500)])
                self.assertEqual(got, [2 * i for i in range(500)])
                got = await asyncio.gather(*[c.request(outer, "quad", i, timeout=30 * SLOW)
                                             for i in range(200)])
                self.assertEqual(got, [4 * i for i in range(200)])
                fut = c.request_nowait(inner, "double", 21)
                self.assertIsInstance(fut, asyncio.Future)
                self.assertEqual(await fut, 42)
                self.assertEqual(c._engine.pending, {})
            for s, t in ((svc_inner, t1), (svc_outer, t2)):
                s.stop()
                await t

        self.run_async(main())

    def test_timeouts_and_errors(self):
        async def main():
            silent = unique("py-as")
            raw = self.peer(register=silent)
            name = unique("py-ae")

            async def fail(req):
                raise errors.RemoteError("out_of_stock", "none")

            def crash(req):
                raise RuntimeError("boom")

            svc, task = await self.serve(name, {"fail": fail, "crash": crash})
            async with Client(self.broker.endpoint) as c:
                start = time.monotonic()
                with self.assertRaises(errors.RequestTimeout) as cm:
                    await c.request(silent, "x", timeout=0.3, ttl_ms=30000)
                self.assertIsNone(cm.exception.reply)
                self.assertLess(time.monotonic() - start, 0.3 + 1.5 * SLOW)
                with self.assertRaises(errors.RequestTimeout) as cm:
                    await c.request(silent, "x", timeout=10 * SLOW, ttl_ms=200)
                self.assertEqual(cm.exception.src, "broker")
                with self.assertRaises(errors.NoSuchServiceError):
                    await c.request(unique("py-nobody"), "x")
                with self.assertRaises(errors.RemoteError) as cm:
                    await c.request(name, "fail")
                self.assertEqual(cm.exception.code, "out_of_stock")
                with self.assertLogs("smartshop", "ERROR"):
                    with self.assertRaises(errors.ServiceError):
                        await c.request(name, "crash")
                with self.assertRaises(errors.UnknownActionError):
                    await c.request(name, "nope")
                with self.assertRaises(errors.UnknownActionError):
                    await c.call_broker("nope")
                self.assertEqual((await c.call_broker("ping"))["status"], "ok")
                with self.assertRaises(errors.NotRegisteredError):
                    await c.unregister(unique("py-never"))
                pending = c.request_nowait(silent, "x", timeout=30)
            with self.assertRaises(errors.StoppedError):   # closed with a request waiting
                await pending
            raw.drain()
            svc.stop()
            await task

        self.run_async(main())

    def test_events_and_broadcasts(self):
        async def main():
            a = unique("py-aev")
            got = asyncio.Queue()

            async def note(ev):
                await got.put((ev.action, ev.payload, ev.src))

            svc, task = await self.serve(a, {}, {"note": note, None: note})
            async with Client(self.broker.endpoint) as c:
                await c.register(unique("py-aev-sender"))
                c.publish(a, "note", 1)
                c.broadcast("other", 2)
                seen = {await asyncio.wait_for(got.get(), 5 * SLOW) for _ in range(2)}
                self.assertEqual(seen, {("note", 1, c.name), ("other", 2, c.name)})
            svc.stop()
            await task

        self.run_async(main())

    def test_an_asyncio_client_and_a_sync_service_talk(self):
        import smartshop
        import threading
        name = unique("py-mix")
        svc = smartshop.Service(name, self.broker.endpoint)
        svc.handler("echo")(lambda req: req.payload)
        st = support.ServiceThread(svc)
        self.addCleanup(st.stop)
        st.wait_ready()

        async def main():
            async with Client(self.broker.endpoint) as c:
                self.assertEqual(await c.request(name, "echo", {"x": [1]}), {"x": [1]})

        self.run_async(main())
        self.assertTrue(threading.active_count() >= 1)


if __name__ == "__main__":
    bp.main()
