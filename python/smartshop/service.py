"""A service: names, one handler per action, and a run() that stays up.

    svc = Service("echo-service")

    @svc.handler("echo")
    def echo(req):
        return req.payload

    svc.run()

run() registers the names (waiting for the broker if it is not up yet),
calls the handlers for each request until SIGTERM or SIGINT (or stop()),
then closes cleanly: the handler running finishes, its answer goes out,
the socket closes and the broker drops the names. Meanwhile the client's
I/O thread keeps the heartbeat, reconnects and registers again after a
broker restart, whatever the handlers are doing.
"""
from __future__ import annotations

import concurrent.futures
import signal
import threading
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from . import _engine, errors
from ._handlers import log
from .client import _CLOSED, _WAKE, Client

__all__ = ["Service"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Client):
    """A Client that serves under one or more names.

    names    the name, or names, to register (N1: 1..64 of [A-Za-z0-9._:-]).
    workers  handlers run one at a time in run()'s thread (1, the default),
             or on up to `workers` threads at once.
    Other keyword arguments go to Client (endpoint, curve, heartbeat...).
    """

    def __init__(self, names: Union[str, Iterable[str]], endpoint: Optional[str] = None, *,
                 workers: int = 1, **kwargs: Any) -> None:
        self.service_names = [names] if isinstance(names, str) else list(names)
        if not self.service_names:
            raise ValueError("a Service needs at least one name")
        for n in self.service_names:
            _engine.check_name(n)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        super().__init__(endpoint, **kwargs)

    def start(self, timeout: float = 5.0, retry: bool = True) -> None:
        """Register every name. A broker that does not answer within `timeout`
        (or cannot be reached) is waited for (with `retry`, logging each attempt) until it does or
        stop() is called; a refusal (ReservedNameError, DeniedError...) raises."""
        for name in self.service_names:
            while name not in self._engine.names:
                try:
                    self.register(name, timeout)
                    break
                except (errors.RequestTimeout, errors.UnreachableError, errors.BrokerLostError) as exc:
                    if not retry or self._stop.is_set():
                        raise
                    log.warning("no answer from the broker at %s to register %s; retrying",
                                self.endpoint, name)
                    if isinstance(exc, errors.UnreachableError):   # failed at once: pause
                        self._stop.wait(min(timeout, 1.0))
                if self._stop.is_set():
                    return

    def run(self, signals: Sequence[int] = STOP_SIGNALS, register_timeout: float = 5.0,
            close: bool = True, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Register, call on_ready(), serve until stop() or one of `signals`
        (handled only when run() is called from the main thread), then
        close() (unless `close` is false)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                previous[sig] = signal.signal(sig, lambda signum, frame: self.stop())
        try:
            self._stop.clear()
            try:
                self.start(register_timeout)
            except (errors.RequestTimeout, errors.UnreachableError):
                if not self._stop.is_set():
                    raise
            if self._stop.is_set():
                return
            if on_ready is not None:
                on_ready()
            if self.workers == 1:
                self._serve_until_stopped()
            else:
                self._run_pool()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if close:
                self.close()

    def _run_pool(self) -> None:
        slots = threading.BoundedSemaphore(self.workers * 2)

        def one(item: Any) -> None:
            try:
                self._dispatch(item)
            finally:
                slots.release()

        with concurrent.futures.ThreadPoolExecutor(self.workers, "smartshop-handler") as pool:
            while not self._stop.is_set():
                item = self._inbox.get()
                if item is _CLOSED:
                    self._inbox.put(_CLOSED)
                    return
                if item is _WAKE:
                    continue
                while not slots.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                pool.submit(one, item)
