"""Topics (docs/protocol.md section 8a): the syntax of topics and patterns,
and whether a topic matches a pattern, as the broker decides them."""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["topic_problem", "matches"]

_TOKEN = re.compile(r"[A-Za-z0-9_:-]+\Z")


def topic_problem(text: object, pattern: bool = False) -> Optional[str]:
    """None if `text` is a valid topic (with `pattern`: a valid pattern,
    '*' one token, '>' the rest), else what is wrong with it (TP1)."""
    if not isinstance(text, str) or not 1 <= len(text.encode("utf-8")) <= 255:
        return "a topic is a string of 1 to 255 bytes"
    tokens = text.split(".")
    if len(tokens) > 16:
        return "a topic has at most 16 tokens"
    for i, tok in enumerate(tokens):
        if tok in ("*", ">"):
            if not pattern:
                return "a published topic has no wildcards ('*', '>')"
            if tok == ">" and i != len(tokens) - 1:
                return "'>' may only be a pattern's last token"
        elif not tok:
            return "a topic's tokens are not empty (no leading, trailing or double dots)"
        elif not _TOKEN.match(tok):
            return "a topic's tokens hold letters, digits and _ : - only"
    return None


def matches(pattern: str, topic: str) -> bool:
    """Whether `topic` matches `pattern` (both valid)."""
    p, t = pattern.split("."), topic.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t) or (tok != "*" and tok != t[i]):
            return False
    return len(p) == len(t)
