"""Handlers by action, and turning a handler's outcome into an answer:
shared by the sync and the asyncio flavour."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import errors
from .message import Message
from .topics import matches

log = logging.getLogger("smartshop")

Handler = Callable[[Message], Any]


class Handlers:
    """Request handlers and event handlers, each by action; None is the
    catch-all for actions without one of their own."""

    def __init__(self) -> None:
        self.requests: Dict[Optional[str], Handler] = {}
        self.events: Dict[Optional[str], Handler] = {}
        # (pattern, group or "") -> the handler of that subscription
        self.topics: Dict[Tuple[str, str], Handler] = {}

    def add(self, table: Dict[Optional[str], Handler], action: Optional[str],
            fn: Handler) -> Handler:
        if action is not None and not isinstance(action, str):
            raise TypeError("an action is a string (or None for any), not %r" % (action,))
        table[action] = fn
        return fn

    def for_request(self, action: Any) -> Optional[Handler]:
        fn = self.requests.get(action) if isinstance(action, str) else None
        return fn or self.requests.get(None)

    def for_event(self, action: Any) -> Optional[Handler]:
        fn = self.events.get(action) if isinstance(action, str) else None
        return fn or self.events.get(None)

    def for_message(self, msg: Message) -> List[Handler]:
        """The handlers for an event: every subscription its topic matches
        (the broker sends it once), else the handler for its action."""
        topic = msg.get("topic")
        if isinstance(topic, str):
            fns = [fn for (pattern, _), fn in list(self.topics.items()) if matches(pattern, topic)]
            if fns:
                return fns
        fn = self.for_event(msg.action)
        return [fn] if fn is not None else []


def no_handler(msg: Message) -> errors.SmartshopError:
    return errors.UnknownActionError("this service has no handler for action %r" % (msg.action,))


def failure(exc: BaseException, msg: Message) -> errors.SmartshopError:
    """The error reply for an exception a handler raised: a SmartshopError
    as it is (its code and message), anything else `service_error` (its
    type only: the message could echo the payload; the traceback is logged)."""
    if isinstance(exc, errors.SmartshopError):
        return exc
    log.error("handler for action %r failed", msg.action, exc_info=exc)
    return errors.ServiceError("the handler for %r raised %s" % (msg.action, type(exc).__name__))


def outcome(fn: Handler, msg: Message) -> Tuple[Any, Optional[errors.SmartshopError]]:
    """Run a sync handler: (payload, None) or (None, error)."""
    try:
        return fn(msg), None
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
        return None, failure(exc, msg)
