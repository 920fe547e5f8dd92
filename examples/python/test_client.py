#!/usr/bin/python3
"""test-client: sends one request to echo-service and prints the answer.

Exits 0 when the response arrives (its payload, then the whole response
as JSON on the last line), 1 on an error reply or when nothing arrives
within --timeout seconds.

    /usr/bin/python3 examples/python/test_client.py [--endpoint EP] [--timeout 5]
"""
import argparse
import json
import sys

import _path  # noqa: F401  (finds ../../python when smartshop is not installed)
from smartshop import Client, RequestTimeout, SmartshopError, default_endpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description="Smartshop test client")
    parser.add_argument("--endpoint", default=default_endpoint(),
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

    with Client(args.endpoint, name=args.src) as bus:
        print("sending  to %s action=%s payload=%s" % (args.dst, args.action, json.dumps(payload)),
              flush=True)
        try:
            answer = bus.request(args.dst, args.action, payload, timeout=args.timeout, full=True)
        except RequestTimeout as exc:
            if exc.reply is None:
                print("error: no response from %s within %.1f s (is the broker at %s running?)"
                      % (args.dst, args.timeout, args.endpoint), file=sys.stderr)
            else:
                print("error: broker answered timeout: %s" % exc.message, file=sys.stderr)
            return 1
        except SmartshopError as exc:
            print("error: %s answered %s: %s" % (exc.src or "broker", exc.code, exc.message),
                  file=sys.stderr)
            return 1
    print("response %s from %s payload=%s" % (answer.msg_id, answer.src,
                                              json.dumps(answer.payload, ensure_ascii=False)))
    print(json.dumps(answer, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
