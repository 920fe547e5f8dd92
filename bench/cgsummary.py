#!/usr/bin/python3
"""bench/cgsummary.py CALLGRIND_FILE TARGET: instructions per round trip.

bench/profile.sh calls it. Messages are counted from the profile itself:
calls of router_handle_read and router_inject_made (the broker handles
each message from the wire once in router_handle_read; a Lua service's
responses come in through router_inject_made) or, for the ceiling, calls of zmq_msg_send (it
forwards each message once). A round trip is two messages.
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:([<>*])\s+)?(.*?)(?:\s+\((\d[\d,]*)x\))?(?:\s+\[.*\])?\s*$")

# (label, function) in the order of the message path; inclusive costs, so a
# row may contain a later one (envelope_parse contains json_scan_object).
BROKER_PARTS = [
    ("event loop, all of it (main thread)", "broker_run"),
    ("  zmq_poll (waiting, socket events)", "zmq_poll"),
    ("  receive: wire_recv (frames in, SRCFD)", "wire_recv"),
    ("  router_read: a message's envelope, read ahead", "router_read"),
    ("  router_handle_read: the rest of the message path", "router_handle_read"),
    ("  router_inject_made: a Lua service's responses", "router_inject_made"),
    ("    decode+validate: envelope_parse (in router_read)", "envelope_parse"),
    ("      of it json_scan_object (UTF-8, JSON)", "json_scan_object"),
    ("    policy hook filter()", "policy_filter"),
    ("    policy hooks filter() + route() in one call", "policy_filter_route"),
    ("    policy hook route() (alone)", "policy_route"),
    ("    registry: registry_find_service", "registry_find_service"),
    ("    registry: registry_peer_on_fd", "registry_peer_on_fd"),
    ("    registry: registry_find_peer", "registry_find_peer"),
    ("    tracking: inflight_add", "inflight_add"),
    ("    tracking: inflight_find", "inflight_find"),
    ("    tracking: inflight_remove", "inflight_remove"),
    ("    send: wire_send (zmq_send x2 + zmq_msg_send)", "wire_send"),
    ("    metrics: metrics_series", "metrics_series"),
    ("    metrics: metrics_request_done", "metrics_request_done"),
    ("  Lua services: services_run", "services_run"),
    ("    lua_service_handle (echo.lua, reply)", "lua_service_handle"),
    ("  drain_monitor (socket monitor)", "drain_monitor"),
    ("  router_expire (deadlines)", "router_expire"),
]
CEILING_PARTS = [
    ("main loop, all of it (main thread)", "main"),
    ("  zmq_msg_recv", "zmq_msg_recv"),
    ("  byte search (memmem)", "__memmem"),
    ("  name -> identity: lookup", "lookup"),
    ("  send: zmq_send + zmq_msg_send", "send_to"),
]


def annotate(path, *args):
    out = subprocess.run(["callgrind_annotate", "--auto=no", *args, path], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def short(name):
    """'/x/src/router.c:router_handle' -> 'router_handle'; keeps ??? ids."""
    name = name.strip()
    if ":" in name:
        name = name.rsplit(":", 1)[1]
    return name


def main():
    path, target = sys.argv[1], sys.argv[2]
    total = 0
    inclusive = {}
    for line in annotate(path, "--inclusive=yes", "--threshold=100"):
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        name = m.group(3)
        if name == "PROGRAM TOTALS":
            total = ir
            continue
        inclusive.setdefault(short(name), ir)
    self_cost = []
    for line in annotate(path, "--threshold=100"):
        m = LINE.match(line)
        if m and m.group(3) != "PROGRAM TOTALS":
            self_cost.append((int(m.group(1).replace(",", "")), m.group(3)))
    calls = {}
    pending = 0
    for line in annotate(path, "--inclusive=yes", "--tree=caller", "--threshold=100"):
        m = LINE.match(line)
        if not m:
            pending = 0
            continue
        if m.group(2) == "<" and m.group(4):
            pending += int(m.group(4).replace(",", ""))
        elif m.group(2) == "*":
            calls.setdefault(short(m.group(3)), pending)
            pending = 0
    counters = ["zmq_msg_send"] if target == "ceiling" else ["router_handle_read", "router_inject_made"]
    counter = " + ".join(counters)
    messages = sum(calls.get(c, 0) for c in counters)
    if not messages:
        print(f"cgsummary: no calls of {counter} in the profile", file=sys.stderr)
        return 1
    rt = messages / 2
    print(f"== {target}: {messages:,} messages ({counter} calls) = {rt:,.0f} round trips collected")
    print(f"   total: {total / rt:,.0f} Ir per round trip, all threads "
          f"({total / messages:,.0f} per message)")
    print(f"{'part (inclusive)':50} {'Ir/rt':>9} {'Ir/msg':>8} {'share':>6}")
    for label, fn in (CEILING_PARTS if target == "ceiling" else BROKER_PARTS):
        if fn in inclusive:
            ir = inclusive[fn]
            print(f"{label:50} {ir / rt:>9,.0f} {ir / messages:>8,.0f} {100 * ir / total:>5.1f}%")
    main_fn = "main" if target == "ceiling" else "broker_run"
    if main_fn in inclusive:
        rest = total - inclusive[main_fn]
        print(f"{'libzmq I/O thread and the rest (total - loop)':50} {rest / rt:>9,.0f}"
              f" {rest / messages:>8,.0f} {100 * rest / total:>5.1f}%")
    # one line for bench/run.sh's instruction rows (report.py)
    hooks = sum(inclusive.get(fn, 0) for fn in
                ("policy_filter", "policy_filter_route", "policy_route", "policy_authorize"))
    print(f"summary label=ir/{target} ir_per_rt={total / rt:.0f} policy_ir_per_rt={hooks / rt:.0f} "
          f"lua_service_ir_per_rt={inclusive.get('lua_service_handle', 0) / rt:.0f}")
    print()
    print(f"top functions by own cost (self Ir per round trip):")
    for ir, name in sorted(self_cost, reverse=True)[:25]:
        print(f"  {ir / rt:>8,.0f}  {100 * ir / total:>5.1f}%  {name.split(' [')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
