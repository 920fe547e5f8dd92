"""The blocking client: requests with timeouts, futures, events, broadcasts.

A ``Client`` owns one DEALER socket, which only its I/O thread (named
``smartshop-io``) touches: it sends, receives, settles futures, pings the
broker, reconnects and registers again, whatever your threads are doing.
Every method is safe to call from any thread.

Requests and events addressed to this client (``@client.handler``,
``@client.on_event``) are queued for you: ``run()`` (or ``process()``)
calls the handlers in the thread that calls it. A handler may make
requests of its own. Future callbacks (``add_done_callback``) run on the
I/O thread: keep them short, and never wait there for another answer.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import math
import os
import queue
import struct
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple, Union

import zmq

from . import _engine, _handlers, errors
from .config import default_endpoint
from .keys import Curve, as_curve
from .message import Message
from .topics import topic_problem

__all__ = ["Client"]

_WAKE = object()     # run(): look at the stop flag
_CLOSED = object()   # run(): the I/O thread has ended

_live: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for c in list(_live):
        c.close(linger=0.2)


def check_request(dst: Any, action: Any, timeout: Any) -> None:
    if not isinstance(dst, str) or not dst:
        raise ValueError("dst is a service name or 'broker', not %r" % (dst,))
    if not isinstance(action, str):
        raise ValueError("action is a string, not %r" % (action,))
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not timeout > 0 or math.isinf(timeout):
        raise ValueError("timeout is a number of seconds > 0, not %r" % (timeout,))


def subscription_result(body: Any) -> Any:
    """A subscribe/unsubscribe answer: the payload, or its refusal raised."""
    if isinstance(body, dict) and body.get("status") == "ok":
        return body
    info = body if isinstance(body, dict) else {}
    raise errors.error_for(str(info.get("code") or "error"), str(info.get("message") or ""))


def open_socket(ctx: zmq.Context, endpoint: str, identity: Optional[bytes],
                curve: Optional[Curve], server_key: Optional[bytes] = None,
                monitor: bool = False) -> Tuple[zmq.Socket, Optional[zmq.Socket]]:
    """A DEALER with the protocol's transport heartbeats (L3), connected to
    one endpoint (`server_key`: that broker's own CURVE key), and with
    `monitor` a PAIR reading its monitor's events (before it connects, so
    that none is missed)."""
    sock = ctx.socket(zmq.DEALER)
    mon = None
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if identity:
            sock.setsockopt(zmq.IDENTITY, identity)
        if curve is not None:
            curve.apply(sock)
            if server_key is not None:
                sock.curve_serverkey = server_key
        if monitor:
            addr = "inproc://smartshop-monitor-%d-%d" % (os.getpid(), next(_monitor_serial))
            sock.monitor(addr, _engine.MONITOR_EVENTS)
            mon = ctx.socket(zmq.PAIR)
            mon.setsockopt(zmq.LINGER, 0)
            mon.connect(addr)
        sock.connect(endpoint)
    except zmq.ZMQError:
        close_socket(sock, mon)
        raise
    return sock, mon


_monitor_serial = itertools.count()


def close_socket(sock: zmq.Socket, mon: Optional[zmq.Socket], linger: int = 0) -> None:
    if mon is not None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        mon.close(0)
    sock.close(linger)


def monitor_event(frames: List[bytes]) -> int:
    """The event number of a monitor message ([event:16 value:32, address])."""
    return struct.unpack("=H", frames[0][:2])[0] if frames and len(frames[0]) >= 2 else 0


def check_endpoints(spec: Any, curve: Optional[Curve]) -> _engine.Endpoints:
    """The failover list; a broker's "#key" needs this client's key pair."""
    endpoints = _engine.parse_endpoints(spec)
    if curve is None and any(k is not None for k in endpoints.server_keys):
        raise ValueError("an endpoint carries a broker key (#key): pass curve= with this "
                         "client's key pair")
    return endpoints


class Client:
    """A connection to the Smartshop broker.

    endpoint      the broker's ZeroMQ endpoint; default $SMARTSHOP_ENDPOINT,
                  else tcp://127.0.0.1:5555. Several (a list, or separated by
                  commas) are a failover list (docs/protocol.md 10b): one
                  connection at a time; when its broker is lost, the next
                  one, names and topics registered again there, and the
                  requests that were waiting fail with BrokerLostError. An
                  endpoint may end in "#<that broker's CURVE public key>".
    name          the src an unregistered client sends as (default c-<random>);
                  a registered one sends as its first name (S1).
    identity      a fixed ZeroMQ routing identity (default: ZeroMQ's own;
                  best, see docs/c-api.md section 10).
    curve         a ``Curve`` (``Curve.load("broker.pub", "client")``), or
                  (server, public, secret) keys or key files: CURVE on.
    heartbeat     seconds between pings to the broker (B1 ``ping``).
    dead_after    broker silent this long (seconds): a new socket, names
                  registered again.
    reconnect_max the reconnect backoff (0.1 s, doubling) stops growing here.
    context       a zmq.Context to use (default: one of its own).
    on_failover   called with a smartshop.Failover after each move to the next
                  endpoint, on the I/O thread (keep it short, never wait there).
    """

    def __init__(self, endpoint: Optional[Union[str, List[str]]] = None, *, name: Optional[str] = None,
                 identity: Optional[Union[str, bytes]] = None,
                 curve: Optional[Union[Curve, Tuple[Any, Any, Any]]] = None,
                 heartbeat: float = 1.0, dead_after: float = 3.5, reconnect_max: float = 5.0,
                 context: Optional[zmq.Context] = None,
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
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._mon: Optional[zmq.Socket] = None
        try:
            self._sock, self._mon = self._open()
        except Exception:
            if self._own_ctx:
                self._ctx.term()
            raise
        self._commands: Deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._stop = threading.Event()
        self._closed = False
        self._exit = False
        self._close_started = False
        self._linger_ms = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._io_loop, name="smartshop-io", daemon=True)
        self._thread.start()
        _live.add(self)

    @property
    def endpoint(self) -> str:
        """The endpoint in use now."""
        return self._endpoints.address

    @property
    def endpoints(self) -> List[str]:
        """Every endpoint, in failover order."""
        return list(self._endpoints.addresses)

    def _open(self) -> Tuple[zmq.Socket, Optional[zmq.Socket]]:
        return open_socket(self._ctx, self._endpoints.address, self._identity, self._curve,
                           self._endpoints.server_key, self._endpoints.failover)

    # -- names ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The src this client sends as."""
        return self._engine.name

    @property
    def names(self) -> List[str]:
        """The names this client holds (and registers again after a restart)."""
        return list(self._engine.names)

    def set_name(self, name: str) -> None:
        """The src to send as while no name is registered (S2)."""
        _engine.check_name(name)
        self._engine.send_as = name

    def register(self, name: str, timeout: float = 5.0) -> Any:
        """Register `name` (T1) and wait for the answer; from then on the client
        registers it again by itself after a reconnect or a broker restart.
        Returns the broker's payload; raises BadNameError, ReservedNameError,
        NameTakenError, DeniedError, LimitExceededError, RequestTimeout..."""
        _engine.check_name(name)
        return self._registration("register", name, timeout).result()

    def unregister(self, name: str, timeout: float = 5.0) -> Any:
        """Drop `name` (T2); forgotten whatever the answer. Raises
        NotRegisteredError when this connection does not hold it."""
        _engine.check_name(name)
        return self._registration("unregister", name, timeout).result()

    def _registration(self, kind: str, name: str, timeout: float) -> "concurrent.futures.Future[Any]":
        check_request("broker", kind, timeout)
        self._not_on_io_thread()
        msg_id, data = self._engine.registration(kind, name)
        return self._submit(msg_id, data, time.monotonic() + timeout, kind, name)

    # -- requests -------------------------------------------------------------

    def request(self, dst: str, action: str, payload: Any = None, *, timeout: float = 5.0,
                ttl_ms: Optional[int] = None, full: bool = False) -> Any:
        """Send a request and wait for its answer: returns the response's
        payload, or raises the error's class (errors.ERROR_CLASSES; a code
        of the service's own: RemoteError). RequestTimeout when nothing came
        within `timeout` seconds. The envelope's ttl_ms is the timeout
        (capped at 300 s) unless given, so the broker gives up when you do.
        With `full`, returns the whole response Message instead."""
        self._not_on_io_thread()
        return self.request_async(dst, action, payload, timeout=timeout, ttl_ms=ttl_ms, full=full).result()

    def request_async(self, dst: str, action: str, payload: Any = None, *, timeout: float = 5.0,
                      ttl_ms: Optional[int] = None, full: bool = False) -> "concurrent.futures.Future[Any]":
        """Send a request and return at once: a concurrent.futures.Future of
        its response payload (or of its error, as request() raises it)."""
        check_request(dst, action, timeout)
        ttl = _engine.ttl_for(timeout, ttl_ms)
        msg_id, data = self._engine.request(dst, action, payload, ttl)  # bad payload: raises here
        return self._submit(msg_id, data, time.monotonic() + timeout, full=full)

    def call_broker(self, action: str, payload: Any = None, timeout: float = 5.0) -> Any:
        """A request to the broker's own service (B1): ping, list_services, stats..."""
        return self.request("broker", action, payload, timeout=timeout)

    def publish(self, dst: str, action: str, payload: Any = None) -> str:
        """Send an event to one instance of `dst`, or to "broadcast" (T5).
        Returns its msg_id; a refusal (no_such_service...) is only logged."""
        check_request(dst, action, 1)
        msg_id, data = self._engine.event(dst, action, payload)
        self._call(lambda: self._send_app(data))
        return msg_id

    def broadcast(self, action: str, payload: Any = None) -> str:
        """Send an event to every registered peer but this one (T5)."""
        return self.publish("broadcast", action, payload)

    # -- topics (docs/protocol.md section 8a) -----------------------------------

    def publish_topic(self, topic: str, action: str, payload: Any = None) -> str:
        """Send an event on `topic` ("order.created") to whoever subscribed
        to a matching pattern; nobody listening is not an error."""
        problem = topic_problem(topic)
        if problem or not isinstance(action, str):
            raise ValueError(problem or "action is a string, not %r" % (action,))
        msg_id, data = self._engine.topic_event(topic, action, payload)
        self._call(lambda: self._send_app(data))
        return msg_id

    def subscribe(self, pattern: str, fn: Optional[Callable[[Message], Any]] = None, *,
                  group: Optional[str] = None, timeout: float = 5.0) -> Any:
        """Receive the topic events matching `pattern` ("order.*",
        "store.12.>") in `fn` (called like an event handler, in run()'s
        thread). With `group`, the group's subscribers share the events:
        each goes to one of them. Without `fn`, a decorator. Raises
        RemoteError (code bad_topic, limit_exceeded, denied) if refused.
        The client subscribes again by itself after a broker restart."""
        if fn is None:
            def deco(f: Callable[[Message], Any]) -> Callable[[Message], Any]:
                self.subscribe(pattern, f, group=group, timeout=timeout)
                return f
            return deco
        problem = topic_problem(pattern, pattern=True)
        if problem:
            raise ValueError(problem)
        body = self._subscription("subscribe", pattern, group, timeout)
        key = (pattern, group or "")
        self._handlers.topics[key] = fn
        self._engine.subscriptions[key] = None
        return body

    def unsubscribe(self, pattern: str, *, group: Optional[str] = None, timeout: float = 5.0) -> Any:
        """Drop that subscription (and its handler)."""
        key = (pattern, group or "")
        self._handlers.topics.pop(key, None)
        self._engine.subscriptions.pop(key, None)
        return self._subscription("unsubscribe", pattern, group, timeout)

    def _subscription(self, action: str, pattern: str, group: Optional[str], timeout: float) -> Any:
        check_request("broker", action, timeout)
        self._not_on_io_thread()
        msg_id, data = self._engine.subscription(action, pattern, group or "")
        body = self._submit(msg_id, data, time.monotonic() + timeout).result()
        return subscription_result(body)

    def _submit(self, msg_id: str, data: bytes, deadline: float, kind: str = "request",
                name: Optional[str] = None, full: bool = False) -> "concurrent.futures.Future[Any]":
        fut: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

        def settle(answer: Optional[Message], error: Optional[errors.SmartshopError]) -> None:
            try:
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(answer if full else (answer.payload if answer is not None else None))
            except concurrent.futures.InvalidStateError:
                pass                       # cancelled by its owner

        def send() -> None:
            self._engine.expect(msg_id, deadline, settle, kind, name)
            if not self._send_app(data):
                self._engine.pending.pop(msg_id, None)
                settle(None, errors.UnreachableError())

        self._call(send, on_closed=lambda: settle(None, errors.StoppedError()))
        return fut

    # -- handlers ---------------------------------------------------------------

    def handler(self, action: Optional[str] = None) -> Callable[[Callable[[Message], Any]], Callable[[Message], Any]]:
        """Decorator: serve requests for `action` (None: every action without a
        handler of its own). The handler gets the request (a Message) and
        returns the response payload; raising a SmartshopError answers with
        its code (``raise RemoteError("out_of_stock", "...")``), any other
        exception with ``service_error``. Runs in the thread calling run()."""
        def deco(fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
            return self._handlers.add(self._handlers.requests, action, fn)
        return deco

    def on_event(self, action: Optional[str] = None) -> Callable[[Callable[[Message], Any]], Callable[[Message], Any]]:
        """Decorator: receive events and broadcasts for `action` (None: any)."""
        def deco(fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
            return self._handlers.add(self._handlers.events, action, fn)
        return deco

    def run(self) -> None:
        """Call handlers for what arrives until stop() (or close())."""
        self._stop.clear()
        self._serve_until_stopped()

    def _serve_until_stopped(self) -> None:
        while not self._stop.is_set():
            item = self._inbox.get()
            if item is _CLOSED:
                self._inbox.put(_CLOSED)
                return
            if item is not _WAKE:
                self._dispatch(item)

    def process(self, timeout: float = 0.0) -> int:
        """Call handlers for what has arrived, waiting up to `timeout` seconds
        for the first; returns how many messages were handled."""
        handled = 0
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic())) \
                    if handled == 0 and timeout > 0 else self._inbox.get_nowait()
            except queue.Empty:
                return handled
            if item is _CLOSED:
                self._inbox.put(_CLOSED)
                return handled
            if item is not _WAKE:
                self._dispatch(item)
                handled += 1

    def stop(self) -> None:
        """Make run() return once the handler now running (if any) is done.
        Safe from signal handlers and other threads."""
        self._stop.set()
        self._inbox.put(_WAKE)

    def _dispatch(self, msg: Message) -> None:
        if msg.type == "request":
            fn = self._handlers.for_request(msg.action)
            payload, err = (None, _handlers.no_handler(msg)) if fn is None else _handlers.outcome(fn, msg)
            self.answer(msg, payload, err)
        else:
            for fn in self._handlers.for_message(msg):
                _handlers.outcome(fn, msg)   # an event has no answer; failures are logged

    def answer(self, request: Message, payload: Any = None,
               error: Optional[errors.SmartshopError] = None) -> None:
        """Answer `request` with a response carrying `payload`, or with `error`."""
        try:
            data = self._engine.answer(request, payload, error)
        except (TypeError, ValueError) as exc:     # the payload is not JSON
            _handlers.log.error("the answer to %r is not JSON: %s", request.action, exc)
            data = self._engine.answer(request, None, errors.ServiceError(
                "the handler for %r returned a value JSON cannot hold" % (request.action,)))
        try:
            self._call(lambda: self._send_app(data))
        except errors.StoppedError:
            pass

    # -- the I/O thread -------------------------------------------------------

    def _not_on_io_thread(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("waiting for an answer on the smartshop I/O thread (in a future "
                               "callback) would wait forever: use request_async there")

    def _call(self, fn: Callable[[], None], on_closed: Optional[Callable[[], None]] = None) -> None:
        """Run fn on the I/O thread."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._commands.append(fn)
        if closed:
            if on_closed is None:
                raise errors.StoppedError()
            on_closed()
            return
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass                        # a wake-up is pending anyway

    def _send_app(self, data: bytes) -> bool:
        """What the application sends (kept for the next broker until the
        handshake); what the library sends by itself goes through _send."""
        if not self._send(data):
            return False
        self._engine.sent(data)
        return True

    def _send(self, data: bytes) -> bool:
        try:
            self._sock.send(data, zmq.DONTWAIT)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            _handlers.log.warning("send failed: %s", exc)
            return False

    def _io_loop(self) -> None:
        eng = self._engine
        eng.start(time.monotonic())
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self._sock, zmq.POLLIN)
        if self._mon is not None:
            poller.register(self._mon, zmq.POLLIN)
        try:
            while not self._exit:
                wait_ms = int(math.ceil(eng.next_wakeup(time.monotonic()) * 1000))
                events = dict(poller.poll(wait_ms))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                while self._commands:
                    self._commands.popleft()()
                self._drain()
                if self._mon is not None:
                    while True:
                        try:
                            eng.monitor_event(monitor_event(self._mon.recv_multipart(zmq.DONTWAIT)))
                        except zmq.Again:
                            break
                    if eng.lost is not None:
                        self._drain()          # what came before the loss is still ours
                now = time.monotonic()
                out, dead = eng.tick(now)
                for data in out:
                    self._send(data)
                if dead and not self._exit:
                    self._replace_socket(poller, now)
        except Exception:  # noqa: BLE001 - a bug here must not hang the callers
            _handlers.log.exception("the smartshop I/O thread failed")
        finally:
            with self._lock:
                self._closed = True
                leftover = list(self._commands)
                self._commands.clear()
            for fn in leftover:      # answers still queued go out before the socket closes
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass
            eng.fail_all(errors.StoppedError())
            close_socket(self._sock, self._mon, self._linger_ms)
            self._inbox.put(_CLOSED)

    def _drain(self) -> None:
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return
            msg, out = self._engine.receive(frames[-1], time.monotonic())   # F4: the last frame
            for data in out:
                self._send(data)
            if msg is not None:
                self._inbox.put(msg)

    def _replace_socket(self, poller: zmq.Poller, now: float) -> None:
        """One endpoint: a fresh socket to it (the broker was silent). Several:
        the next endpoint (failover)."""
        eng = self._engine
        lost, reason = self.endpoint, eng.lost or "silent"
        if not self._endpoints.failover:
            _handlers.log.warning("no word from the broker at %s; reconnecting", lost)
        poller.unregister(self._sock)
        if self._mon is not None:
            poller.unregister(self._mon)
        close_socket(self._sock, self._mon)
        self._endpoints.advance()
        self._sock, self._mon = self._open()
        poller.register(self._sock, zmq.POLLIN)
        if self._mon is not None:
            poller.register(self._mon, zmq.POLLIN)
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
                self._on_failover(_engine.Failover(lost, self.endpoint, reason, failed))
            except Exception:  # noqa: BLE001 - the application's bug must not stop the I/O
                _handlers.log.exception("the on_failover callback failed")

    def close(self, linger: float = 0.5) -> None:
        """Stop, fail requests still waiting with StoppedError, and close the
        socket, giving messages already queued up to `linger` seconds to go."""
        with self._lock:
            if self._close_started:
                return
            self._close_started = True
        self._linger_ms = int(linger * 1000)

        def leave() -> None:
            self._exit = True

        try:
            self._call(leave)
        except errors.StoppedError:
            pass
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._own_ctx:
            self._ctx.term()
        _live.discard(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
