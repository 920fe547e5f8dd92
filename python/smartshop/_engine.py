"""The protocol state both flavours share: no sockets, no threads, no clock
of its own. The sync client drives it from its I/O thread, the asyncio one
from its reader task; each passes `now` (time.monotonic()) in and sends the
frames it gets back.

What it keeps, as libsmartshop does (src/client/client.c): the requests
waiting for answers (matched by correlation_id), the names registered (to
register them again), the heartbeat (a broker ``ping`` every `heartbeat`
seconds; names missing from its answer are registered again, L4), and when
the broker has been silent for `dead_after` seconds, a request for a new
socket, with a backoff doubling from 0.1 s to `reconnect_max`.

With several endpoints (a failover list, docs/protocol.md section 10b) it
also keeps what the application sent before the connection's handshake
(nothing has left the process yet: it may go to the next broker instead),
and on failover() fails the requests that were waiting with
BrokerLostError (CF3) and hands back the frames for the next broker.
"""
from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import zmq

from . import errors
from .message import Message, build_message, dumps, loads

log = logging.getLogger("smartshop")

MAX_TTL_MS = 300000
NAME_MAX = 64
MAX_UNSENT = 1000      # frames kept before a handshake (ZeroMQ's own queue holds 1000)
KEY_LEN = 40
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
# what failover needs to learn from a connection's socket monitor at once
MONITOR_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                  | zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_FAILED)


@dataclass
class Endpoints:
    """The broker endpoints, in order, and the one in use (CF1)."""
    addresses: List[str]
    server_keys: List[Optional[bytes]]     # "#key" of each, or None
    current: int = 0

    @property
    def failover(self) -> bool:
        return len(self.addresses) > 1

    @property
    def address(self) -> str:
        return self.addresses[self.current]

    @property
    def server_key(self) -> Optional[bytes]:
        return self.server_keys[self.current]

    def advance(self) -> None:
        self.current = (self.current + 1) % len(self.addresses)


def parse_endpoints(spec: Any) -> Endpoints:
    """"tcp://a:5555, tcp://b:5555" or a list of endpoints; each may end in
    "#<broker's CURVE public key>". Raises ValueError for anything else."""
    items = spec.split(",") if isinstance(spec, str) else list(spec) if isinstance(spec, (list, tuple)) else None
    if items is None:
        raise ValueError("an endpoint is a string (or a list of them), not %r" % (spec,))
    addresses, keys = [], []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("an endpoint is a string, not %r" % (item,))
        item = item.strip()
        if not item:
            continue
        address, hash_, key = item.partition("#")
        scheme, sep, rest = address.partition("://")
        if not scheme or not sep or not rest:
            raise ValueError("not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:5555): %r" % (item,))
        if hash_ and len(key) != KEY_LEN:
            raise ValueError("a broker's key after '#' is 40 characters of Z85: %r" % (item,))
        addresses.append(address)
        keys.append(key.encode() if hash_ else None)
    if not addresses:
        raise ValueError("no endpoint in %r" % (spec,))
    return Endpoints(addresses, keys)


@dataclass
class Failover:
    """What an on_failover callback is told: the endpoint given up, the one
    now in use, why ("disconnected", "unreachable", "handshake_failed",
    "silent"), and how many waiting requests got BrokerLostError."""
    from_endpoint: str
    to_endpoint: str
    reason: str
    failed_requests: int

# settle(answer, None) with the response Message, or settle(None, error)
Settle = Callable[[Optional[Message], Optional[errors.SmartshopError]], None]


@dataclass
class Pending:
    """A request (or register/unregister) waiting for its answer."""
    msg_id: str
    deadline: float
    settle: Settle
    kind: str = "request"        # request, register, unregister
    name: Optional[str] = None   # for register/unregister


def ttl_for(timeout: float, ttl_ms: Optional[int]) -> int:
    """The envelope's ttl_ms: given, else the timeout in ms (1..300000, D1)."""
    if ttl_ms is None:
        return max(1, min(MAX_TTL_MS, int(math.ceil(timeout * 1000))))
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or not 1 <= ttl_ms <= MAX_TTL_MS:
        raise ValueError("ttl_ms must be an integer 1..300000, not %r" % (ttl_ms,))
    return ttl_ms


def check_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= NAME_MAX:
        raise ValueError("a name is 1 to 64 characters of [A-Za-z0-9._:-], not %r" % (name,))


@dataclass
class Engine:
    heartbeat: float = 1.0
    dead_after: float = 3.5
    reconnect_max: float = 5.0
    names: List[str] = field(default_factory=list)
    send_as: str = field(default_factory=lambda: "c-" + uuid.uuid4().hex[:8])
    pending: Dict[str, Pending] = field(default_factory=dict)
    ping_ids: Deque[str] = field(default_factory=lambda: deque(maxlen=16))  # recent pings
    last_heard: float = 0.0
    next_ping: float = 0.0
    next_reconnect: float = 0.0
    backoff: float = 0.1
    background: Dict[str, str] = field(default_factory=dict)  # re-register msg_id -> name
    # topic subscriptions held (pattern, group or ""), subscribed again when
    # the broker forgot them; msg_ids of those background subscribes
    subscriptions: Dict[Tuple[str, str], None] = field(default_factory=dict)
    background_subs: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    # failover (several endpoints): what the application sent on this
    # connection before its handshake, and whether the handshake happened
    keep_unsent: bool = False
    handshaken: bool = False
    unsent: List[bytes] = field(default_factory=list)
    unsent_overflow: bool = False
    lost: Optional[str] = None     # why this connection's broker is lost (the monitor said)

    def start(self, now: float) -> None:
        self.last_heard = now
        self.next_ping = now   # the first ping at once

    @property
    def name(self) -> str:
        """The src we send as: the first registered name, else send_as."""
        first = self.names[:1]      # one atomic read: another thread may change names
        return first[0] if first else self.send_as

    # -- what we send -------------------------------------------------------

    def request(self, dst: str, action: str, payload: Any, ttl_ms: int) -> Tuple[str, bytes]:
        """A request's msg_id and frame (file it with expect())."""
        m = build_message("request", self.name, dst, action, payload)
        m["ttl_ms"] = ttl_ms
        return m["msg_id"], dumps(m)

    def registration(self, kind: str, name: str) -> Tuple[str, bytes]:
        """A register/unregister's msg_id and frame (file it with expect())."""
        m = build_message(kind, name, "broker", kind)
        return m["msg_id"], dumps(m)

    def expect(self, msg_id: str, deadline: float, settle: Settle, kind: str = "request",
               name: Optional[str] = None) -> None:
        """Wait for the answer to `msg_id` until `deadline`; then settle()."""
        self.pending[msg_id] = Pending(msg_id, deadline, settle, kind, name)

    def event(self, dst: str, action: str, payload: Any) -> Tuple[str, bytes]:
        m = build_message("event", self.name, dst, action, payload)
        return m["msg_id"], dumps(m)

    def topic_event(self, topic: str, action: str, payload: Any) -> Tuple[str, bytes]:
        """An event on `topic` (TP2): no dst."""
        m = build_message("event", self.name, None, action, payload)
        m["topic"] = topic
        return m["msg_id"], dumps(m)

    def subscription(self, action: str, pattern: str, group: str) -> Tuple[str, bytes]:
        """A subscribe/unsubscribe request to the broker (TP4)."""
        body = {"topic": pattern}
        if group:
            body["group"] = group
        m = build_message("request", self.name, "broker", action, body)
        m["ttl_ms"] = 5000
        return m["msg_id"], dumps(m)

    def _resubscribe(self) -> List[bytes]:
        out = []
        for key in self.subscriptions:
            msg_id, data = self.subscription("subscribe", key[0], key[1])
            self.background_subs[msg_id] = key
            out.append(data)
        while len(self.background_subs) > 1000:
            self.background_subs.pop(next(iter(self.background_subs)))
        return out

    def answer(self, req: Message, payload: Any = None,
               error: Optional[errors.SmartshopError] = None) -> bytes:
        """The response (or error) for request `req`, from the name it was
        addressed to if we hold it."""
        src = req.dst if req.dst in self.names else self.name
        if error is not None:
            body = {"code": error.code, "message": error.message}
            return dumps(build_message("error", src, req.src, req.action, body, req.msg_id))
        return dumps(build_message("response", src, req.src, req.action, payload, req.msg_id))

    def _reregister(self, name: str) -> bytes:
        m = build_message("register", name, "broker", "register")
        self.background[m["msg_id"]] = name
        if len(self.background) > 1000:           # answers that never came
            self.background.pop(next(iter(self.background)))
        return dumps(m)

    # -- what we receive ----------------------------------------------------

    def receive(self, data: bytes, now: float) -> Tuple[Optional[Message], List[bytes]]:
        """One frame from the broker: (a request or event to dispatch, or
        None; frames to send, e.g. registrations the broker forgot)."""
        self.last_heard = now
        self.backoff = 0.1
        try:
            m = loads(data)
        except (ValueError, UnicodeDecodeError):
            log.warning("dropped a frame that is not JSON")
            return None, []
        if not isinstance(m, dict) or not isinstance(m.get("type"), str):
            log.warning("dropped a message without a type")
            return None, []
        msg = Message(m)
        mtype = msg.type
        corr = msg.correlation_id
        if mtype in ("response", "error"):
            if not isinstance(corr, str):
                if mtype == "error":   # the broker could not read our msg_id (E1, E2, F3)
                    log.warning("the broker refused a message of ours: %s", _describe(msg))
                return None, []
            if corr in self.ping_ids:
                # pings queued while the broker was away may be answered late,
                # or refused (spoofed_src: sent before a register they followed)
                return None, self._check_ping(msg) if mtype == "response" else []
            p = self.pending.pop(corr, None)
            if p is not None:
                self._settle(p, msg)
                return None, []
            sub = self.background_subs.pop(corr, None)
            if sub is not None:
                body = msg.payload if isinstance(msg.payload, dict) else {}
                if mtype == "error" or body.get("status") != "ok":
                    log.warning("subscribing to %s again failed: %s", sub[0], body.get("message"))
                return None, []
            name = self.background.pop(corr, None)
            if name is not None:
                if mtype == "error":
                    log.warning("registering %s again failed: %s", name, _describe(msg))
                else:
                    log.info("registered %s again", name)
                return None, []
            if mtype == "error":    # to an event of ours, or after we gave up on a request
                quiet = _code(msg) in ("timeout", "unknown_request", "not_your_request")
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "error reply for a message of ours (%s): %s", corr, _describe(msg))
            return None, []                       # late answers are dropped
        if mtype in ("request", "event"):
            return msg, []
        return None, []

    def _settle(self, p: Pending, msg: Message) -> None:
        if p.kind == "unregister" and p.name in self.names:
            self.names.remove(p.name)      # forgotten whatever the answer (as libsmartshop)
        if msg.type == "error":
            p.settle(None, errors.error_from_reply(msg))
            return
        if p.kind == "register" and p.name not in self.names:
            self.names.append(p.name)
        p.settle(msg, None)

    def _check_ping(self, msg: Message) -> List[bytes]:
        body = msg.payload if isinstance(msg.payload, dict) else {}
        known = body.get("registered")
        known = set(k for k in known if isinstance(k, str)) if isinstance(known, list) else set()
        out = []
        for name in self.names:
            if name not in known and name not in self.background.values():
                log.warning("the broker does not know %s (it restarted?); registering again", name)
                out.append(self._reregister(name))
        held = body.get("subscriptions", 0)         # left out when none (TP5)
        if self.subscriptions and isinstance(held, int) and held < len(self.subscriptions) \
                and not self.background_subs:
            log.warning("the broker lost our subscriptions (it restarted?); subscribing again")
            out += self._resubscribe()
        return out

    # -- time ---------------------------------------------------------------

    def tick(self, now: float) -> Tuple[List[bytes], bool]:
        """Expire requests, ping when due: (frames to send, reconnect?)."""
        self.expire(now)
        out = []
        if now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            m = build_message("request", self.name, "broker", "ping", None)
            m["ttl_ms"] = ttl_for(self.dead_after, None)
            self.ping_ids.append(m["msg_id"])
            out.append(dumps(m))
        dead = (self.lost is not None or now - self.last_heard > self.dead_after) \
            and now >= self.next_reconnect
        return out, dead

    def expire(self, now: float) -> None:
        """Settle the requests whose deadline has passed with RequestTimeout."""
        for p in [p for p in self.pending.values() if p.deadline <= now]:
            del self.pending[p.msg_id]
            if p.kind == "unregister" and p.name in self.names:
                self.names.remove(p.name)   # forgotten whatever the answer (as libsmartshop)
            p.settle(None, errors.RequestTimeout("no answer within the timeout"))

    def reconnected(self, now: float) -> List[bytes]:
        """After a new socket: register every name again; back off."""
        self.last_heard = now
        self.next_ping = now
        self.next_reconnect = now + self.backoff
        self.backoff = min(self.backoff * 2, self.reconnect_max)
        self.background.clear()
        self.background_subs.clear()
        return [self._reregister(n) for n in self.names] + self._resubscribe()

    def next_wakeup(self, now: float) -> float:
        """Seconds until tick() has something to do."""
        nxt = self.next_ping
        for p in self.pending.values():
            nxt = min(nxt, p.deadline)
        dead_at = now if self.lost is not None else self.last_heard + self.dead_after
        nxt = min(nxt, max(dead_at, self.next_reconnect))
        return max(0.0, nxt - now)

    def fail_all(self, error: errors.SmartshopError) -> int:
        """Settle every pending request with `error` (the client is closing,
        or its broker was lost); returns how many."""
        pending, self.pending = self.pending, {}
        for p in pending.values():
            if p.kind == "unregister" and p.name in self.names:
                self.names.remove(p.name)   # forgotten whatever the answer (as libsmartshop)
            p.settle(None, error)
        return len(pending)

    # -- failover (several endpoints) -------------------------------------------

    def sent(self, data: bytes) -> None:
        """The application sent `data` on this connection: kept until its
        handshake, to go to the next broker if this one is never reached."""
        if self.keep_unsent and not self.handshaken:
            if len(self.unsent) < MAX_UNSENT:
                self.unsent.append(data)
            else:
                self.unsent_overflow = True

    def monitor_event(self, event: int) -> None:
        """An event of this connection's socket monitor (MONITOR_EVENTS)."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshaken = True      # what it sent may have arrived from now on
            self.unsent.clear()
        elif event == zmq.EVENT_DISCONNECTED:
            self.lost = "disconnected"
        elif event == zmq.EVENT_CONNECT_RETRIED:
            self.lost = self.lost or "unreachable"
        elif event & HANDSHAKE_FAILED:
            self.lost = "handshake_failed"

    def failover(self, now: float, lost: str, reason: str) -> Tuple[List[bytes], List[bytes], int]:
        """The broker at `lost` is gone (or was never reached); a new socket
        to the next one is open. Returns (frames of our own: names and
        topics again; the application's frames carried over, to send and
        keep again; how many waiting requests failed with BrokerLostError).
        Requests fail only if something may have reached the lost broker."""
        reached = self.handshaken or self.unsent_overflow
        carried = [] if reached else self.unsent
        self.unsent, self.unsent_overflow, self.handshaken, self.lost = [], False, False, None
        self.ping_ids.clear()
        failed = 0
        if reached:      # first: an unregister waiting forgets its name before names go again
            failed = self.fail_all(errors.BrokerLostError(
                "lost the broker at %s (%s) while waiting; the request may or may not have "
                "been handled" % (lost, reason)))
        return self.reconnected(now), carried, failed


def _code(msg: Message) -> Optional[str]:
    return msg.payload.get("code") if isinstance(msg.payload, dict) else None


def _describe(msg: Message) -> str:
    body = msg.payload if isinstance(msg.payload, dict) else {}
    return "%s (%s)" % (body.get("code"), body.get("message"))
