#!/usr/bin/python3
"""echo-service: answers every request with its own payload.

Registers the name "echo-service" with the Smartshop broker, then for each
request replies with a response (src echo-service, dst = the request's src,
same action, same payload, correlation_id = the request's msg_id).
Prints one line per message received. Ctrl-C (or SIGTERM) stops it cleanly.

    /usr/bin/python3 examples/python/echo_service.py [--endpoint tcp://127.0.0.1:5555]
"""
import argparse
import os
import signal
import sys

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core.config import BROKER_ENDPOINT  # noqa: E402
from core.message import build_message, dumps, loads  # noqa: E402

NAME = "echo-service"


def log(text):
    print(text, flush=True)


def register(sock):
    sock.send(dumps(build_message("register", NAME, "broker", "register")))


def handle(sock, msg):
    mtype = msg.get("type")
    if mtype == "request":
        reply = build_message("response", NAME, msg.get("src"), msg.get("action"),
                              payload=msg.get("payload"),
                              correlation_id=msg.get("msg_id"))
        sock.send(dumps(reply))
        log("request  %s from %s action=%s -> echoed" %
            (msg.get("msg_id"), msg.get("src"), msg.get("action")))
    elif mtype == "response" and msg.get("src") == "broker" and msg.get("action") == "register":
        log("registered as %s" % (msg.get("payload") or {}).get("name", NAME))
    elif mtype == "error":
        payload = msg.get("payload") or {}
        log("error    %s: %s (about %s)" %
            (payload.get("code"), payload.get("message"), msg.get("correlation_id")))
    else:
        log("%-8s %s from %s action=%s" %
            (mtype, msg.get("msg_id"), msg.get("src"), msg.get("action")))


def _stop_on_sigterm(signum, frame):
    # SIGTERM stops it the same way Ctrl-C does.
    raise KeyboardInterrupt


def main(argv=None):
    parser = argparse.ArgumentParser(description="Smartshop echo service")
    parser.add_argument("--endpoint", default=BROKER_ENDPOINT,
                        help="broker endpoint (default %(default)s, env SMARTSHOP_ENDPOINT)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # A routing identity of our own (as bytes, the seed's troubleshooting #3),
    # distinct per process so several instances can share the name.
    sock.identity = ("%s-%d" % (NAME, os.getpid())).encode()
    sock.connect(args.endpoint)
    register(sock)
    log("echo-service connecting to %s" % args.endpoint)

    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    try:
        while True:
            if not poller.poll(200):
                continue
            frames = sock.recv_multipart()
            try:
                msg = loads(frames[-1])  # the JSON is always the last frame
            except ValueError as exc:
                log("ignored  undecodable frame (%s)" % exc)
                continue
            if not isinstance(msg, dict):
                log("ignored  non-object message")
                continue
            handle(sock, msg)
    except KeyboardInterrupt:
        log("echo-service stopping")
    finally:
        sock.close(0)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
