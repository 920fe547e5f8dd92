"""The asyncio flavour: the same client and service on pyzmq's asyncio sockets.

    import asyncio
    from smartshop.asyncio import Client, Service

    async def main():
        async with Client() as bus:
            print(await bus.request("echo-service", "echo", {"hello": "world"}))

    asyncio.run(main())

Everything runs on the event loop: one reader task receives, settles the
futures, pings the broker, reconnects and registers again. Handlers may be
coroutine functions (``async def``) or plain functions (which then run on
the loop: keep them quick). Each request is served in a task of its own,
at most `concurrency` at once, so a handler may await other requests.
Methods are not thread-safe: call them from the loop's thread.
"""
from __future__ import annotations

import asyncio
import inspect
import signal
import time
from typing import Any, Awaitable, Callable, Iterable, List, Optional, Sequence, Set, Tuple, Union

import zmq
import zmq.asyncio

from . import _engine, _handlers, errors
from .client import (check_endpoints, check_request, close_socket, monitor_event, open_socket,
                     subscription_result)
from .config import default_endpoint
from .keys import Curve, as_curve
from .message import Message
from .topics import topic_problem

__all__ = ["Client", "Service"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[Message], Union[Any, Awaitable[Any]]]


class Client:
    """A connection to the broker, on asyncio. Arguments as smartshop.Client
    (a failover list too; `on_failover` is called on the loop, and may be a
    coroutine function), plus `concurrency`: how many requests are served at once.
    Use ``async with Client(...) as bus`` or ``await bus.start()`` /
    ``await bus.close()``."""

    def __init__(self, endpoint: Optional[Union[str, List[str]]] = None, *, name: Optional[str] = None,
                 identity: Optional[Union[str, bytes]] = None,
                 curve: Optional[Union[Curve, Tuple[Any, Any, Any]]] = None,
                 heartbeat: float = 1.0, dead_after: float = 3.5, reconnect_max: float = 5.0,
                 context: Optional[zmq.asyncio.Context] = None, concurrency: int = 64,
                 on_failover: Optional[Callable[[_engine.Failover], Any]] = None) -> None:
        self._identity = identity.encode() if isinstance(identity, str) else identity
        self._curve = as_curve(curve)
        self._endpoints = check_endpoints(endpoint or default_endpoint(), self._curve)
        self._on_failover = on_failover
        self._engine = _engine.Engine(heartbeat, dead_after, reconnect_max)
        self._engine.keep_unsent = self._endpoints.failover
        if name is not None:
            _engine.check_name(name)
            self._engine.send_as = name
        self._handlers = _handlers.Handlers()
        self._ctx = context
        self._own_ctx = context is None
        self._sock: Optional[zmq.asyncio.Socket] = None
        self._mon: Optional[zmq.asyncio.Socket] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._concurrency = concurrency
        self._slots: Optional[asyncio.Semaphore] = None
        self._stopped: Optional[asyncio.Event] = None
        self._closed = False

    # -- life -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket and start the reader task (once)."""
        if self._sock is not None:
            return
        if self._closed:
            raise errors.StoppedError()
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        self._sock, self._mon = self._open()
        self._slots = asyncio.Semaphore(self._concurrency)
        if self._stopped is None:
            self._stopped = asyncio.Event()
        self._engine.start(time.monotonic())
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="smartshop-reader")

    async def close(self, linger: float = 0.5) -> None:
        """Stop the reader, fail waiting requests with StoppedError, close."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for task in list(self._tasks):
            task.cancel()
        self._engine.fail_all(errors.StoppedError())
        if self._sock is not None:
            close_socket(self._sock, self._mon, int(linger * 1000))
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def stop(self) -> None:
        """Make run() return."""
        if self._stopped is None:
            self._stopped = asyncio.Event()
        self._stopped.set()

    async def run(self) -> None:
        """Serve handlers until stop()."""
        await self.start()
        assert self._stopped is not None
        self._stopped.clear()
        await self._stopped.wait()

    @property
    def endpoint(self) -> str:
        """The endpoint in use now."""
        return self._endpoints.address

    @property
    def endpoints(self) -> List[str]:
        """Every endpoint, in failover order."""
        return list(self._endpoints.addresses)

    def _open(self) -> Tuple[zmq.asyncio.Socket, Optional[zmq.asyncio.Socket]]:
        assert self._ctx is not None
        return open_socket(self._ctx, self._endpoints.address, self._identity, self._curve,
                           self._endpoints.server_key, self._endpoints.failover)

    # -- names ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The src this client sends as."""
        return self._engine.name

    @property
    def names(self) -> List[str]:
        return list(self._engine.names)

    def set_name(self, name: str) -> None:
        _engine.check_name(name)
        self._engine.send_as = name

    async def register(self, name: str, timeout: float = 5.0) -> Any:
        """As smartshop.Client.register."""
        return await self._registration("register", name, timeout)

    async def unregister(self, name: str, timeout: float = 5.0) -> Any:
        """As smartshop.Client.unregister."""
        return await self._registration("unregister", name, timeout)

    def _registration(self, kind: str, name: str, timeout: float) -> "asyncio.Future[Any]":
        _engine.check_name(name)
        check_request("broker", kind, timeout)
        msg_id, data = self._engine.registration(kind, name)
        return self._submit(msg_id, data, timeout, kind, name)

    # -- requests ---------------------------------------------------------------

    async def request(self, dst: str, action: str, payload: Any = None, *, timeout: float = 5.0,
                      ttl_ms: Optional[int] = None, full: bool = False) -> Any:
        """As smartshop.Client.request, awaited."""
        return await self.request_nowait(dst, action, payload, timeout=timeout, ttl_ms=ttl_ms, full=full)

    def request_nowait(self, dst: str, action: str, payload: Any = None, *, timeout: float = 5.0,
                       ttl_ms: Optional[int] = None, full: bool = False) -> "asyncio.Future[Any]":
        """Send a request now; an asyncio.Future of its response payload."""
        check_request(dst, action, timeout)
        msg_id, data = self._engine.request(dst, action, payload, _engine.ttl_for(timeout, ttl_ms))
        return self._submit(msg_id, data, timeout, full=full)

    async def call_broker(self, action: str, payload: Any = None, timeout: float = 5.0) -> Any:
        """A request to the broker's own service (B1)."""
        return await self.request("broker", action, payload, timeout=timeout)

    def publish(self, dst: str, action: str, payload: Any = None) -> str:
        """Send an event to `dst` or "broadcast"; returns its msg_id."""
        check_request(dst, action, 1)
        self._need_socket()
        msg_id, data = self._engine.event(dst, action, payload)
        self._send_app(data)
        return msg_id

    def broadcast(self, action: str, payload: Any = None) -> str:
        """Send an event to every registered peer but this one."""
        return self.publish("broadcast", action, payload)

    # -- topics -----------------------------------------------------------------

    def publish_topic(self, topic: str, action: str, payload: Any = None) -> str:
        """As smartshop.Client.publish_topic."""
        problem = topic_problem(topic)
        if problem or not isinstance(action, str):
            raise ValueError(problem or "action is a string, not %r" % (action,))
        self._need_socket()
        msg_id, data = self._engine.topic_event(topic, action, payload)
        self._send_app(data)
        return msg_id

    async def subscribe(self, pattern: str, fn: Handler, *, group: Optional[str] = None,
                        timeout: float = 5.0) -> Any:
        """As smartshop.Client.subscribe; `fn` may be a coroutine function."""
        problem = topic_problem(pattern, pattern=True)
        if problem:
            raise ValueError(problem)
        body = await self._subscription("subscribe", pattern, group, timeout)
        key = (pattern, group or "")
        self._handlers.topics[key] = fn
        self._engine.subscriptions[key] = None
        return body

    async def unsubscribe(self, pattern: str, *, group: Optional[str] = None,
                          timeout: float = 5.0) -> Any:
        """As smartshop.Client.unsubscribe."""
        key = (pattern, group or "")
        self._handlers.topics.pop(key, None)
        self._engine.subscriptions.pop(key, None)
        return await self._subscription("unsubscribe", pattern, group, timeout)

    async def _subscription(self, action: str, pattern: str, group: Optional[str],
                            timeout: float) -> Any:
        check_request("broker", action, timeout)
        msg_id, data = self._engine.subscription(action, pattern, group or "")
        return subscription_result(await self._submit(msg_id, data, timeout))

    def _need_socket(self) -> None:
        if self._closed:
            raise errors.StoppedError()
        if self._sock is None:
            raise RuntimeError("start() the client first (or use `async with`)")

    def _submit(self, msg_id: str, data: bytes, timeout: float, kind: str = "request",
                name: Optional[str] = None, full: bool = False) -> "asyncio.Future[Any]":
        self._need_socket()
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Any]" = loop.create_future()

        def settle(answer: Optional[Message], error: Optional[errors.SmartshopError]) -> None:
            timer.cancel()
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(answer if full else (answer.payload if answer is not None else None))

        timer = loop.call_later(timeout, self._expire, msg_id)
        self._engine.expect(msg_id, time.monotonic() + timeout, settle, kind, name)
        if not self._send_app(data):
            self._engine.pending.pop(msg_id, None)
            settle(None, errors.UnreachableError())
        return fut

    def _expire(self, msg_id: str) -> None:
        self._engine.expire(time.monotonic() + 0.001)   # settles `msg_id` (and any other due)

    def _send_app(self, data: bytes) -> bool:
        """What the application sends (kept for the next broker until the
        handshake); what the library sends by itself goes through _send."""
        if not self._send(data):
            return False
        self._engine.sent(data)
        return True

    def _send(self, data: bytes) -> bool:
        if self._sock is None or self._sock.closed:
            return False
        f = self._sock.send(data, flags=zmq.DONTWAIT)
        exc = f.exception() if f.done() else None
        if isinstance(exc, zmq.Again):
            return False
        if exc is not None:
            _handlers.log.warning("send failed: %s", exc)
            return False
        return True

    # -- handlers ---------------------------------------------------------------

    def handler(self, action: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorator: serve requests for `action` (None: any other). The handler
        (def or async def) gets the request Message and returns the payload;
        raising a SmartshopError answers with its code, any other exception
        with service_error."""
        def deco(fn: Handler) -> Handler:
            return self._handlers.add(self._handlers.requests, action, fn)
        return deco

    def on_event(self, action: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorator: receive events and broadcasts for `action` (None: any)."""
        def deco(fn: Handler) -> Handler:
            return self._handlers.add(self._handlers.events, action, fn)
        return deco

    async def _serve(self, msg: Message) -> None:
        assert self._slots is not None
        await self._slots.acquire()
        try:
            if msg.type == "request":
                fn = self._handlers.for_request(msg.action)
                payload, err = None, None
                if fn is None:
                    err = _handlers.no_handler(msg)
                else:
                    try:
                        payload = fn(msg)
                        if inspect.isawaitable(payload):
                            payload = await payload
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        err = _handlers.failure(exc, msg)
                try:
                    data = self._engine.answer(msg, payload, err)
                except (TypeError, ValueError) as exc:
                    _handlers.log.error("the answer to %r is not JSON: %s", msg.action, exc)
                    data = self._engine.answer(msg, None, errors.ServiceError(
                        "the handler for %r returned a value JSON cannot hold" % (msg.action,)))
                self._send_app(data)
            else:
                for fn in self._handlers.for_message(msg):
                    try:
                        result = fn(msg)
                        if inspect.isawaitable(result):
                            await result
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # noqa: BLE001
                        _handlers.log.exception("event handler for %r failed", msg.action)
        finally:
            self._slots.release()

    # -- the reader task ----------------------------------------------------------

    async def _read(self) -> None:
        eng = self._engine
        loop = asyncio.get_running_loop()
        recv: "Optional[asyncio.Future[Any]]" = None   # one receive kept waiting across turns
        mrecv: "Optional[asyncio.Future[Any]]" = None  # the same for the monitor
        try:
            while True:
                assert self._sock is not None
                if recv is None:
                    recv = self._sock.recv_multipart()
                if mrecv is None and self._mon is not None:
                    mrecv = self._mon.recv_multipart()
                waiting = [f for f in (recv, mrecv) if f is not None]
                if not any(f.done() for f in waiting):
                    await asyncio.wait(waiting, timeout=max(eng.next_wakeup(time.monotonic()), 0.001),
                                       return_when=asyncio.FIRST_COMPLETED)
                if recv.done():
                    frames, recv = recv.result(), None
                    self._take_all(eng, loop, frames)
                if mrecv is not None and mrecv.done():
                    frames, mrecv = mrecv.result(), None
                    while frames is not None:
                        eng.monitor_event(monitor_event(frames))
                        frames = self._try_recv(self._mon)
                    if eng.lost is not None:          # what came before the loss is ours
                        if recv is not None:
                            if recv.done():
                                self._take_all(eng, loop, recv.result())
                            else:
                                recv.cancel()
                            recv = None
                        self._take_all(eng, loop, None)
                now = time.monotonic()
                out, dead = eng.tick(now)
                for data in out:
                    self._send(data)
                if dead:
                    for f in (recv, mrecv):
                        if f is not None:
                            f.cancel()
                    recv = mrecv = None
                    self._replace_socket(loop, now)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            _handlers.log.exception("the smartshop reader task failed")
            eng.fail_all(errors.StoppedError("the reader task failed"))
            self.stop()
        finally:
            for f in (recv, mrecv):
                if f is not None:
                    f.cancel()

    @staticmethod
    def _try_recv(sock: Optional[zmq.asyncio.Socket]) -> Optional[List[bytes]]:
        """What else has arrived on `sock`, no waiting (None: nothing)."""
        if sock is None:
            return None
        try:
            return sock.recv_multipart(flags=zmq.DONTWAIT).result()
        except zmq.Again:
            return None

    def _take_all(self, eng: _engine.Engine, loop: asyncio.AbstractEventLoop,
                  frames: Optional[List[bytes]]) -> None:
        if frames is None:
            frames = self._try_recv(self._sock)
        while frames is not None:
            self._take(eng, loop, frames)
            frames = self._try_recv(self._sock)

    def _replace_socket(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """One endpoint: a fresh socket to it (the broker was silent). Several:
        the next endpoint (failover)."""
        eng = self._engine
        lost, reason = self.endpoint, eng.lost or "silent"
        if not self._endpoints.failover:
            _handlers.log.warning("no word from the broker at %s; reconnecting", lost)
        assert self._sock is not None
        close_socket(self._sock, self._mon)
        self._endpoints.advance()
        self._sock, self._mon = self._open()
        if not self._endpoints.failover:
            for data in eng.reconnected(now):
                self._send(data)
            return
        own, carried, failed = eng.failover(now, lost, reason)
        for data in own:
            self._send(data)
        for data in carried:
            self._send_app(data)
        _handlers.log.warning("lost the broker at %s (%s); now on %s; %d waiting request(s) "
                              "failed with broker_lost", lost, reason, self.endpoint, failed)
        if self._on_failover is not None:
            try:
                result = self._on_failover(_engine.Failover(lost, self.endpoint, reason, failed))
                if inspect.isawaitable(result):
                    task = loop.create_task(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:  # noqa: BLE001 - the application's bug must not stop the reader
                _handlers.log.exception("the on_failover callback failed")

    def _take(self, eng: _engine.Engine, loop: asyncio.AbstractEventLoop, frames: List[bytes]) -> None:
        msg, out = eng.receive(frames[-1], time.monotonic())   # F4: the last frame
        for data in out:
            self._send(data)
        if msg is not None:
            # the task waits for a slot, never the reader: answers to
            # requests the running handlers make must still get in
            task = loop.create_task(self._serve(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class Service(Client):
    """A Client that serves under one or more names (as smartshop.Service)."""

    def __init__(self, names: Union[str, Iterable[str]], endpoint: Optional[str] = None,
                 **kwargs: Any) -> None:
        self.service_names = [names] if isinstance(names, str) else list(names)
        if not self.service_names:
            raise ValueError("a Service needs at least one name")
        for n in self.service_names:
            _engine.check_name(n)
        super().__init__(endpoint, **kwargs)

    async def start_service(self, timeout: float = 5.0, retry: bool = True) -> None:
        """Start, and register every name; a silent broker is waited for
        (with `retry`), a refusal raises."""
        await self.start()
        assert self._stopped is not None
        for name in self.service_names:
            while not self._stopped.is_set() and name not in self._engine.names:
                try:
                    await self.register(name, timeout)
                    break
                except (errors.RequestTimeout, errors.UnreachableError, errors.BrokerLostError) as exc:
                    if not retry:
                        raise
                    _handlers.log.warning("no answer from the broker at %s to register %s; "
                                          "retrying", self.endpoint, name)
                    if isinstance(exc, errors.UnreachableError):   # failed at once: pause
                        try:
                            await asyncio.wait_for(self._stopped.wait(), min(timeout, 1.0))
                        except asyncio.TimeoutError:
                            pass

    async def run(self, signals: Sequence[int] = STOP_SIGNALS, register_timeout: float = 5.0,
                  close: bool = True, grace: float = 5.0,
                  on_ready: Optional[Callable[[], Any]] = None) -> None:
        """Register, call on_ready(), serve until stop() or one of `signals`,
        let the handlers running finish (up to `grace` seconds), then close()."""
        loop = asyncio.get_running_loop()
        installed = []
        if self._stopped is None:
            self._stopped = asyncio.Event()
        self._stopped.clear()
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (RuntimeError, ValueError, NotImplementedError):
                pass                       # not the main thread
        try:
            await self.start_service(register_timeout)
            if on_ready is not None and not self._stopped.is_set():
                result = on_ready()
                if inspect.isawaitable(result):
                    await result
            await self._stopped.wait()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=grace)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if close:
                await self.close()
