#!/usr/bin/python3
"""Smartshop Bus Protocol v1 conformance suite (docs/protocol.md).

Runs against any broker already listening on --endpoint. Needs only the
standard library and pyzmq (Debian: python3-zmq; run with /usr/bin/python3).

    /usr/bin/python3 tests/conformance/run.py --endpoint tcp://127.0.0.1:5555 [-k T4] [-v]

Exit status: 0 all passed (skips allowed), 1 a test failed, 2 no broker answered.
"""

import argparse
import os
import sys
import unittest

sys.dont_write_bytecode = True     # leave no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bus  # noqa: E402


def flatten(suite):
    for x in suite:
        if isinstance(x, unittest.TestSuite):
            yield from flatten(x)
        else:
            yield x


def preflight():
    """A ping to the broker, so that 'nothing listens' is one clear line."""
    p = bus.Peer()
    try:
        m = p.send(bus.env("request", bus.uname("preflight"), "broker", "ping"))
        r = p.recv(3.0)
        if r is None:
            return "no answer to a ping within %.1fs" % bus.t(3.0)
        if r.get("correlation_id") != m["msg_id"]:
            return "unexpected answer to a ping: %r" % (r.frames,)
        return None
    finally:
        p.close()


def main():
    ap = argparse.ArgumentParser(description="Smartshop Bus Protocol v1 conformance suite")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555",
                    help="the broker's endpoint (default %(default)s)")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose name contains this (e.g. a rule id: -k T4); repeatable")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply every wait (e.g. 5 under valgrind)")
    ap.add_argument("--slow", action="store_true", help="also run the multi-second liveness tests")
    ap.add_argument("--broker-pid", type=int,
                    help="enables the D5 graceful-stop test, which SIGTERMs this broker (run it alone, last)")
    ap.add_argument("--max-message-bytes", type=int, default=1048576,
                    help="the broker's --max-message-bytes (default %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-x", "--failfast", action="store_true")
    args = ap.parse_args()

    c = bus.CONFIG
    c.endpoint, c.scale, c.slow = args.endpoint, args.time_scale, args.slow
    c.broker_pid, c.max_bytes = args.broker_pid, args.max_message_bytes

    problem = preflight()
    if problem:
        print("conformance: broker at %s: %s" % (args.endpoint, problem), file=sys.stderr)
        return 2

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else "*%s*" % p for p in args.patterns]
    tests = list(flatten(loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)))
    # D5 stops the broker: last; tests that may crash a broker just before it
    tests.sort(key=lambda x: ("_D5_" in x.id(),
                              getattr(getattr(x, getattr(x, "_testMethodName", ""), None), "run_last", False)))
    for x in tests:
        if isinstance(x, unittest.loader._FailedTest):
            print("conformance: could not load %s" % x.id(), file=sys.stderr)
    runner = unittest.TextTestRunner(verbosity=2 if args.verbose else 1, failfast=args.failfast)
    result = runner.run(unittest.TestSuite(tests))
    if result.skipped and not args.verbose:
        print("skipped:")
        for test, reason in result.skipped:
            print("  %s: %s" % (test.id().split(".")[-1], reason))
    print("conformance: %d run, %d failed, %d errors, %d skipped"
          % (result.testsRun, len(result.failures), len(result.errors), len(result.skipped)))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
