"""The bus's message format: one JSON object per ZeroMQ frame.

    {"msg_id": "<uuid4>", "type": "register|unregister|request|response|event|error",
     "src": "<sender name>", "dst": "<name>|broker|broadcast", "action": "<command>",
     "payload": <any JSON>, "correlation_id": "<msg_id answered>|null",
     "timestamp": "<ISO-8601 UTC>"}

``build_message``, ``dumps`` and ``loads`` behave exactly as the seed's
``core.message`` did, so ``from smartshop.message import build_message,
loads, dumps`` is the one-line change for an old service. Receivers read
the LAST frame of a multipart message as the JSON (docs/protocol.md F4).

``Message`` is a dict with attribute access, what handlers receive.
"""
from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Optional, Union

__all__ = ["build_message", "dumps", "loads", "Message", "new_msg_id", "now_iso"]


def now_iso() -> str:
    """The current UTC time as YYYY-MM-DDTHH:MM:SS.mmmZ (protocol T7)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


_now_iso = now_iso  # the seed's name


def new_msg_id() -> str:
    """A fresh msg_id: a random UUID, lowercase."""
    return str(uuid.uuid4())


def build_message(type: str, src: Optional[str], dst: Optional[str], action: Optional[str],
                  payload: Any = None, correlation_id: Optional[str] = None) -> dict:
    """Return a new message dict with a fresh msg_id (uuid4) and timestamp."""
    return {
        "msg_id": new_msg_id(),
        "type": type,
        "src": src,
        "dst": dst,
        "action": action,
        "payload": payload,
        "correlation_id": correlation_id,
        "timestamp": now_iso(),
    }


def dumps(msg: Any) -> bytes:
    """Encode a message dict as one UTF-8 JSON frame (bytes)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """Decode one JSON frame (bytes or str) into a dict."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data)


class Message(dict):
    """A received message: the decoded JSON object, with its envelope fields
    also readable as attributes (``msg.payload``, ``msg.src``...). Fields the
    sender left out read as None. It is a dict, so ``msg["payload"]`` and
    ``json.dumps(msg)`` work too."""

    __slots__ = ()

    @property
    def msg_id(self) -> Optional[str]:
        return self.get("msg_id")

    @property
    def type(self) -> Optional[str]:
        return self.get("type")

    @property
    def src(self) -> Optional[str]:
        return self.get("src")

    @property
    def dst(self) -> Optional[str]:
        return self.get("dst")

    @property
    def action(self) -> Optional[str]:
        return self.get("action")

    @property
    def payload(self) -> Any:
        return self.get("payload")

    @property
    def correlation_id(self) -> Optional[str]:
        return self.get("correlation_id")

    @property
    def timestamp(self) -> Optional[str]:
        return self.get("timestamp")

    @property
    def ttl_ms(self) -> Optional[int]:
        return self.get("ttl_ms")

    @property
    def topic(self) -> Optional[str]:
        """A topic event's topic (docs/protocol.md TP2); None for others."""
        return self.get("topic")
