"""Errors, one class per protocol error code (docs/protocol.md section 13).

Every error the library raises is a ``SmartshopError`` with

- ``code``: the protocol's code (``"no_such_service"``, ``"timeout"``...), a
  service's own code (``"out_of_stock"``), or a local one (``"stopped"``,
  ``"unreachable"``);
- ``message``: text for humans;
- ``reply``: the error message (a ``Message``) when one came from the wire,
  None for a local failure (a timeout with no answer, a stopped client).

``error_for(code, message, reply)`` picks the class for a code
(``ERROR_CLASSES``); a code it does not know gives a plain ``RemoteError``.
In a handler, raising any ``SmartshopError`` answers the request with an
error of that code: ``raise RemoteError("out_of_stock", "no apples left")``.
"""
from __future__ import annotations

import builtins
from typing import Dict, Optional, Type

__all__ = [
    "SmartshopError", "RemoteError", "BadFramesError", "BadJsonError", "TooLargeError",
    "BadEnvelopeError", "BadNameError", "ReservedNameError", "NameTakenError",
    "UnsupportedVersionError", "NotRegisteredError", "SpoofedSrcError", "DuplicateMsgIdError",
    "NoSuchServiceError", "UnknownActionError", "UnknownRequestError", "NotYourRequestError",
    "BusyError", "RequestTimeout", "ServiceGoneError", "ShuttingDownError", "DeniedError",
    "BadPayloadError", "UnavailableError",
    "PolicyError", "LimitExceededError", "InternalError", "ServiceError", "StoppedError",
    "UnreachableError", "BrokerLostError", "ERROR_CLASSES", "error_for", "error_from_reply",
]


class SmartshopError(Exception):
    """Base of every error this library raises (see the module docstring)."""

    code: str = "error"

    def __init__(self, code: Optional[str] = None, message: str = "",
                 reply: Optional[dict] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.reply = reply
        super().__init__("%s: %s" % (self.code, message) if message else self.code)

    @property
    def src(self) -> Optional[str]:
        """Who sent the error reply: "broker", a service's name, or None (local)."""
        return self.reply.get("src") if self.reply else None


class RemoteError(SmartshopError):
    """An error reply with a code of the service's own (and the base class
    of the protocol's codes): ``RemoteError("out_of_stock", "none left")``."""

    def __init__(self, code: str = "error", message: str = "", reply: Optional[dict] = None) -> None:
        super().__init__(code, message, reply)


def _coded(name: str, code: str, doc: str, *bases: type) -> Type[RemoteError]:
    """A RemoteError subclass whose code is fixed: Cls(message, reply)."""

    def __init__(self, message: str = "", reply: Optional[dict] = None) -> None:
        SmartshopError.__init__(self, code, message, reply)

    return type(name, (RemoteError,) + bases, {"code": code, "__doc__": doc, "__init__": __init__,
                                               "__module__": __name__})


BadFramesError = _coded("BadFramesError", "bad_frames", "Frame shape not [json] / ['', json] (F3).")
BadJsonError = _coded("BadJsonError", "bad_json", "Not one well-formed JSON object in UTF-8 (E1).")
TooLargeError = _coded("TooLargeError", "too_large", "Data frame over --max-message-bytes (E2).")
BadEnvelopeError = _coded("BadEnvelopeError", "bad_envelope", "A field missing or malformed (E1-E4, T3).")
BadNameError = _coded("BadNameError", "bad_name", "src/dst not a name (N1).")
ReservedNameError = _coded("ReservedNameError", "reserved_name", "A reserved name (N2).")
NameTakenError = _coded("NameTakenError", "name_taken", "With CURVE, a name held under another key (N3).")
UnsupportedVersionError = _coded("UnsupportedVersionError", "unsupported_version", "`v` not 1 (V1).")
NotRegisteredError = _coded("NotRegisteredError", "not_registered",
                            "Unregister of a name this connection does not hold (T2).")
SpoofedSrcError = _coded("SpoofedSrcError", "spoofed_src", "`src` not allowed for this connection (S1-S3).")
DuplicateMsgIdError = _coded("DuplicateMsgIdError", "duplicate_msg_id", "Request msg_id already in flight (T3).")
NoSuchServiceError = _coded("NoSuchServiceError", "no_such_service", "No live instance of dst (T3, T5).")
UnknownActionError = _coded("UnknownActionError", "unknown_action",
                            "The broker's (B1) or a service's unknown action.")
UnknownRequestError = _coded("UnknownRequestError", "unknown_request", "An answer for no request in flight (T4).")
NotYourRequestError = _coded("NotYourRequestError", "not_your_request",
                             "An answer from a connection that is not the handler (T4).")
BusyError = _coded("BusyError", "busy", "A bound is full; back off and retry (D4).")
RequestTimeout = _coded("RequestTimeout", "timeout",
                        "No answer in time: the local timeout (reply None) or the broker's (D1).",
                        builtins.TimeoutError)
ServiceGoneError = _coded("ServiceGoneError", "service_gone", "The handler disconnected (D2).")
ShuttingDownError = _coded("ShuttingDownError", "shutting_down", "The broker is stopping (D5).")
DeniedError = _coded("DeniedError", "denied", "A policy or the CURVE allow list refused it (N3, N4, P1).")
BadPayloadError = _coded("BadPayloadError", "bad_payload",
                         "A policy's payload check refused it; the message names the field (P1).")
UnavailableError = _coded("UnavailableError", "unavailable",
                          "A policy failed it fast: the service is failing, e.g. circuit open (P1).")
PolicyError = _coded("PolicyError", "policy_error", "A policy hook failed (N4, P1).")
LimitExceededError = _coded("LimitExceededError", "limit_exceeded", "A broker limit is reached (L5).")
InternalError = _coded("InternalError", "internal", "A broker fault.")
ServiceError = _coded("ServiceError", "service_error",
                      "The service's handler failed (T8; also an uncaught exception in a "
                      "smartshop handler).")


class StoppedError(SmartshopError):
    """The client was stopped or closed before the answer came (local)."""

    code = "stopped"

    def __init__(self, message: str = "the client was closed", reply: Optional[dict] = None) -> None:
        super().__init__("stopped", message, reply)


class UnreachableError(SmartshopError):
    """ZeroMQ could not queue the message (local): its queue to the broker is
    full, or it holds no connection to queue on (e.g. after the broker
    refused the CURVE handshake). Nothing was sent."""

    code = "unreachable"

    def __init__(self, message: str = "ZeroMQ cannot queue the message: its queue to the broker "
                 "is full, or no connection is up", reply: Optional[dict] = None) -> None:
        super().__init__("unreachable", message, reply)


class BrokerLostError(SmartshopError):
    """With several endpoints: the broker this request went to was lost
    (its connection closed, or it stayed silent) and the client moved to the
    next one (local, docs/protocol.md CF3). The request may or may not have
    been handled; retry if the action is safe to repeat."""

    code = "broker_lost"

    def __init__(self, message: str = "the broker was lost while waiting; the request may or "
                 "may not have been handled", reply: Optional[dict] = None) -> None:
        super().__init__("broker_lost", message, reply)


ERROR_CLASSES: Dict[str, Type[SmartshopError]] = {
    cls.code: cls for cls in (
        BadFramesError, BadJsonError, TooLargeError, BadEnvelopeError, BadNameError,
        ReservedNameError, NameTakenError, UnsupportedVersionError, NotRegisteredError,
        SpoofedSrcError, DuplicateMsgIdError, NoSuchServiceError, UnknownActionError,
        UnknownRequestError, NotYourRequestError, BusyError, RequestTimeout, ServiceGoneError,
        ShuttingDownError, DeniedError, BadPayloadError, UnavailableError, PolicyError, LimitExceededError, InternalError,
        ServiceError)
}
"""Protocol error code -> its class (every code of docs/protocol.md section 13)."""


def error_for(code: str, message: str = "", reply: Optional[dict] = None) -> SmartshopError:
    """The exception for an error `code`: its class, else a RemoteError."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return RemoteError(code, message, reply)
    return cls(message, reply)


def error_from_reply(reply: dict) -> SmartshopError:
    """The exception for an error message (type "error") from the wire."""
    body = reply.get("payload")
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        code = "error"
    if not isinstance(message, str):
        message = ""
    return error_for(code, message, reply)
