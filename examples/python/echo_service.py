#!/usr/bin/python3
"""echo-service: answers every request with its own payload.

Registers "echo-service" with the broker and answers each request with a
response carrying the request's payload (smartshop.Service does the
envelope, correlation, heartbeats and re-registration). Prints one line
per request. Ctrl-C or SIGTERM stops it cleanly (exit 0).

    /usr/bin/python3 examples/python/echo_service.py [--endpoint tcp://127.0.0.1:5555]
"""
import argparse
import sys

import _path  # noqa: F401  (finds ../../python when smartshop is not installed)
from smartshop import Service, default_endpoint

NAME = "echo-service"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Smartshop echo service")
    parser.add_argument("--endpoint", default=default_endpoint(),
                        help="broker endpoint (default %(default)s, env SMARTSHOP_ENDPOINT)")
    args = parser.parse_args(argv)

    svc = Service(NAME, args.endpoint)

    @svc.handler()                    # every action
    def echo(req):
        print("request  %s from %s action=%s -> echoed" % (req.msg_id, req.src, req.action),
              flush=True)
        return req.payload

    print("echo-service connecting to %s" % args.endpoint, flush=True)
    svc.run(on_ready=lambda: print("registered as %s" % NAME, flush=True))
    print("echo-service stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
