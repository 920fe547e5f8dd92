#!/usr/bin/python3
"""Smartshop Bus Protocol v1 conformance suite (docs/protocol.md).

Runs against any broker already listening on --endpoint. Needs only the
standard library and pyzmq (Debian: python3-zmq; run with /usr/bin/python3).

    /usr/bin/python3 tests/conformance/run.py --endpoint tcp://127.0.0.1:5555 [-k T4] [-v]

A broker configured otherwise than the default set-up (section 17 of the
spec) is checked with --profile NAME and the values it was configured with;
then only that profile's tests run:

    run.py --endpoint EP --profile limits --max-peers 8 --max-names-per-peer 3 --max-services 8
    run.py --endpoint EP --profile curve --curve-server-key broker.pub --curve-client-keys DIR
    run.py --endpoint EP --profile policy     # the broker runs fixtures/policy.lua
    run.py --endpoint EP --profile lua        # the broker hosts fixtures/services/*.lua

Exit status: 0 all passed (skips allowed), 1 a test failed, 2 no broker
answered or the options do not describe a usable configuration.
"""

import argparse
import json
import os
import sys
import time
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
    """A ping to the broker, so that 'nothing listens' is one clear line; and
    one look at each profile's configuration, so that a broker configured
    otherwise is one clear line too, not every test of the profile failing."""
    p = bus.Peer()
    try:
        m = p.send(bus.env("request", bus.uname("preflight"), "broker", "ping"))
        r = p.recv(3.0)
        if r is None:
            return "no answer to a ping within %.1fs%s" % (
                bus.t(3.0), " (profile curve: is CURVE on, with the suite's allow list and "
                "this --curve-server-key?)" if "curve" in bus.CONFIG.profiles else "")
        if r.get("correlation_id") != m["msg_id"]:
            return "unexpected answer to a ping: %r" % (r.frames,)
        if "policy" in bus.CONFIG.profiles:
            m = p.send(bus.env("register", bus.uname("deny"), "broker", "register", {}))
            r = p.recv(3.0)
            if r is None or r.get("correlation_id") != m["msg_id"] or \
                    (r.get("payload") or {}).get("code") != "denied":
                return ("profile policy: a ct-deny- name was not refused: is the broker "
                        "running tests/conformance/fixtures/policy.lua? (got %r)"
                        % (r.raw if r else None,))
        if "lua" in bus.CONFIG.profiles:
            deadline = time.monotonic() + bus.t(3.0)
            while True:
                m = p.send(bus.env("request", bus.uname("preflight"), "broker", "list_services"))
                r = p.recv(3.0)
                names = {s.get("name") for s in ((r.get("payload") or {}).get("services") or [])} \
                    if r is not None else set()
                if {"ct-lua", "ct-lua-noreq"} <= names:
                    break
                if time.monotonic() > deadline:
                    return ("profile lua: ct-lua and ct-lua-noreq are not registered: does the "
                            "broker host tests/conformance/fixtures/services?")
                time.sleep(0.1)
        return None
    finally:
        p.close()


def profile_of(test):
    method = getattr(test, getattr(test, "_testMethodName", ""), None)
    return getattr(method, "profile", None)


def configure_profiles(args, c):
    """Checks the options each --profile needs and loads the CURVE keys.
    Returns a problem (a string) or None."""
    if "limits" in c.profiles:
        values = (args.max_peers, args.max_names_per_peer, args.max_services)
        if None in values:
            return ("--profile limits needs the broker's --max-peers, --max-names-per-peer "
                    "and --max-services")
        # the tests fill each limit: keep them small
        if not (2 <= args.max_peers <= 64 and 1 <= args.max_names_per_peer <= 16
                and 1 <= args.max_services <= 64
                and args.max_names_per_peer < args.max_services
                <= (args.max_peers - 2) * args.max_names_per_peer):
            return ("--profile limits wants 2 <= --max-peers <= 64, 1 <= --max-names-per-peer "
                    "<= 16, --max-services <= 64, and --max-names-per-peer < --max-services "
                    "<= (--max-peers - 2) * --max-names-per-peer (e.g. 8, 3, 8)")
        c.max_peers, c.max_names, c.max_services = values
    if "curve" in c.profiles:
        if not (args.curve_server_key and args.curve_client_keys):
            return "--profile curve needs --curve-server-key and --curve-client-keys"
        if not bus.zmq.has("curve"):
            return "--profile curve: this pyzmq/libzmq has no CURVE support"
        try:
            c.curve_server = bus.curve_key(args.curve_server_key)
            for who in ("alice", "bob", "admin"):
                base = os.path.join(args.curve_client_keys, who)
                c.curve_keys[who] = (bus.read_key_file(base + ".pub"), bus.read_key_file(base + ".key"))
        except (OSError, ValueError) as e:
            return "--profile curve: %s" % e
        c.curve_default = c.curve_keys["alice"]
    return None


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
    ap.add_argument("--profile", dest="profiles", action="append", default=[],
                    choices=sorted(bus.PROFILES),
                    help="the broker was configured for this profile: run its tests "
                         "(only those); repeatable")
    lim = ap.add_argument_group("profile limits (the broker's own values)")
    lim.add_argument("--max-peers", type=int, metavar="N")
    lim.add_argument("--max-names-per-peer", type=int, metavar="N")
    lim.add_argument("--max-services", type=int, metavar="N")
    cur = ap.add_argument_group("profile curve")
    cur.add_argument("--curve-server-key", metavar="KEY",
                     help="the broker's public key: 40 Z85 characters, or a file holding them")
    cur.add_argument("--curve-client-keys", metavar="DIR",
                     help="holds alice, bob and admin .pub/.key pairs, listed in the broker's "
                          "allow list as docs/protocol.md section 17 says")
    ap.add_argument("--list", action="store_true",
                    help="print the names of the selected tests and exit (no broker needed)")
    ap.add_argument("--results", metavar="FILE",
                    help="also write the counts (run, passed, failed, errors, skipped) and the "
                         "ids of the tests run and skipped to FILE as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-x", "--failfast", action="store_true")
    args = ap.parse_args()

    c = bus.CONFIG
    c.endpoint, c.scale, c.slow = args.endpoint, args.time_scale, args.slow
    c.broker_pid, c.max_bytes = args.broker_pid, args.max_message_bytes
    c.profiles = set(args.profiles)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else "*%s*" % p for p in args.patterns]
    tests = list(flatten(loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)))
    if c.profiles:
        # a broker configured for a profile is not the default broker the
        # other tests assume: run only the profiles' tests
        tests = [x for x in tests
                 if profile_of(x) in c.profiles or isinstance(x, unittest.loader._FailedTest)]
    if args.list:
        for x in tests:
            print(x.id())
        return 0

    problem = configure_profiles(args, c)
    if problem:
        print("conformance: %s" % problem, file=sys.stderr)
        return 2
    problem = preflight()
    if problem:
        print("conformance: broker at %s: %s" % (args.endpoint, problem), file=sys.stderr)
        return 2

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
    if args.results:
        counts = {"run": result.testsRun, "failed": len(result.failures),
                  "errors": len(result.errors), "skipped": len(result.skipped)}
        counts["passed"] = counts["run"] - counts["failed"] - counts["errors"] - counts["skipped"]
        counts["skipped_tests"] = sorted(x.id() for x, _ in result.skipped)
        counts["ran"] = sorted(x.id() for x in tests if x.id() not in counts["skipped_tests"])
        with open(args.results, "w") as f:
            json.dump(counts, f)
            f.write("\n")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
