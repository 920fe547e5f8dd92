#!/usr/bin/python3
"""echo-service on asyncio: smartshop.asyncio.Service, one task per request.

    /usr/bin/python3 examples/python/async_echo_service.py [--endpoint tcp://127.0.0.1:5555]

Ctrl-C or SIGTERM stops it cleanly (exit 0).
"""
import argparse
import asyncio
import sys

import _path  # noqa: F401  (finds ../../python when smartshop is not installed)
from smartshop import default_endpoint
from smartshop.asyncio import Service


async def main(endpoint):
    svc = Service("echo-service", endpoint)

    @svc.handler()
    async def echo(req):
        print("request  %s from %s action=%s -> echoed" % (req.msg_id, req.src, req.action),
              flush=True)
        return req.payload

    await svc.run(on_ready=lambda: print("registered as echo-service", flush=True))
    print("echo-service stopping", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Smartshop echo service (asyncio)")
    parser.add_argument("--endpoint", default=default_endpoint(),
                        help="broker endpoint (default %(default)s, env SMARTSHOP_ENDPOINT)")
    asyncio.run(main(parser.parse_args().endpoint))
    sys.exit(0)
