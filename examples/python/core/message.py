"""The seed's message format: one JSON object per ZeroMQ frame.

    {"msg_id": "<uuid4>", "type": "register|unregister|request|response|event|error",
     "src": "<sender name>", "dst": "<name>|broker|broadcast", "action": "<command>",
     "payload": <any JSON>, "correlation_id": "<msg_id answered>|null",
     "timestamp": "<ISO-8601 UTC>"}

Receivers must read the LAST frame of a multipart message as the JSON
(a REQ-style peer gets an empty delimiter frame before it).

Kept so that the seed's services run unchanged: build_message, dumps and
loads are smartshop.message's (the same code, one copy). New code imports
`from smartshop.message import build_message, loads, dumps` instead.
When the smartshop package is not installed, this repository's python/
folder is put on sys.path to find it.
"""
import os
import sys

try:
    from smartshop.message import _now_iso, build_message, dumps, loads  # noqa: F401
except ImportError:
    _PYTHON_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "..", "..", "..", "python"))
    if not os.path.isdir(os.path.join(_PYTHON_DIR, "smartshop")):
        raise
    sys.path.append(_PYTHON_DIR)
    from smartshop.message import _now_iso, build_message, dumps, loads  # noqa: F401

__all__ = ["build_message", "dumps", "loads"]
