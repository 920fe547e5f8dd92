#!/usr/bin/python3
"""test-client: sends one request to echo-service and prints the answer.

Exits 0 when the response whose correlation_id matches arrives, 1 on an
error reply or when nothing arrives within --timeout seconds.

    /usr/bin/python3 examples/python/test_client.py [--endpoint EP] [--timeout 5]
"""
import argparse
import json
import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core.config import BROKER_ENDPOINT  # noqa: E402
from core.message import build_message, dumps, loads  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="Smartshop test client")
    parser.add_argument("--endpoint", default=BROKER_ENDPOINT,
                        help="broker endpoint (default %(default)s, env SMARTSHOP_ENDPOINT)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for the response (default %(default)s)")
    parser.add_argument("--src", default="test-client", help="our name (default %(default)s)")
    parser.add_argument("--dst", default="echo-service", help="service to ask (default %(default)s)")
    parser.add_argument("--action", default="echo", help="action (default %(default)s)")
    parser.add_argument("--payload", default='{"hello": "world"}',
                        help="JSON payload (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        parser.error("--payload is not JSON: %s" % exc)

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)

    req = build_message("request", args.src, args.dst, args.action, payload=payload)
    sock.send(dumps(req))
    print("sent     %s to %s action=%s payload=%s" %
          (req["msg_id"], args.dst, args.action, json.dumps(payload)), flush=True)

    deadline = time.monotonic() + args.timeout
    status = 1
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                print("error: no response from %s within %.1f s (is the broker at %s running?)"
                      % (args.dst, args.timeout, args.endpoint), file=sys.stderr)
                break
            frames = sock.recv_multipart()
            try:
                msg = loads(frames[-1])  # the JSON is always the last frame
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            corr = msg.get("correlation_id")
            if msg.get("type") == "error" and corr in (req["msg_id"], None):
                p = msg.get("payload") or {}
                print("error: broker answered %s: %s" % (p.get("code"), p.get("message")),
                      file=sys.stderr)
                break
            if msg.get("type") == "response" and corr == req["msg_id"]:
                print("response %s from %s payload=%s" %
                      (msg.get("msg_id"), msg.get("src"),
                       json.dumps(msg.get("payload"), ensure_ascii=False)), flush=True)
                print(json.dumps(msg, ensure_ascii=False), flush=True)
                status = 0
                break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        sock.close(0)
        ctx.term()
    return status


if __name__ == "__main__":
    sys.exit(main())
