"""The seed's message format: one JSON object per ZeroMQ frame.

    {"msg_id": "<uuid4>", "type": "register|unregister|request|response|event|error",
     "src": "<sender name>", "dst": "<name>|broker|broadcast", "action": "<command>",
     "payload": <any JSON>, "correlation_id": "<msg_id answered>|null",
     "timestamp": "<ISO-8601 UTC>"}

Receivers must read the LAST frame of a multipart message as the JSON
(a REQ-style peer gets an empty delimiter frame before it).
"""
import datetime
import json
import uuid


def _now_iso():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)


def build_message(type, src, dst, action, payload=None, correlation_id=None):
    """Return a new message dict with a fresh msg_id (uuid4) and timestamp."""
    return {
        "msg_id": str(uuid.uuid4()),
        "type": type,
        "src": src,
        "dst": dst,
        "action": action,
        "payload": payload,
        "correlation_id": correlation_id,
        "timestamp": _now_iso(),
    }


def dumps(msg):
    """Encode a message dict as one UTF-8 JSON frame (bytes)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(data):
    """Decode one JSON frame (bytes or str) into a dict."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    return json.loads(data)
