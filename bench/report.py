#!/usr/bin/python3
"""bench/report.py RESULTS: the benchmark's summary (bench/run.sh calls it).

Reads the key=value lines smartshop-loadgen printed, one per run, and
prints medians, ours/ceiling ratios and the issue's targets, met or missed.
Exit status 1 if a run failed or lost a request.
"""
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "label" in kv:
                runs[kv["label"]].append(kv)
    return runs


def med(runs, label, key):
    vals = [float(r[key]) for r in runs.get(label, []) if key in r and float(r[key]) >= 0]
    return statistics.median(vals) if vals else None


def spread(runs, label, key):
    vals = [float(r[key]) for r in runs.get(label, []) if key in r]
    return (min(vals), max(vals)) if vals else (None, None)


def paired(runs, label, base, key):
    """The ratio label/base of `key` round by round (run.sh runs each once a
    round, in order): the median and range of those ratios. Both sides of a
    pair ran within seconds of each other, so a slow minute of the machine
    moves both; the ratio of the medians does not have that protection."""
    pairs = [float(a[key]) / float(b[key]) for a, b in zip(runs.get(label, []), runs.get(base, []))
             if key in a and key in b and float(a[key]) >= 0 and float(b[key]) > 0]
    if not pairs:
        return None, None, None
    return statistics.median(pairs), min(pairs), max(pairs)


def fmt_paired(p, digits=2):
    m, lo, hi = p
    return "-" if m is None else f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "met" if ok else "MISSED"


def main():
    runs = load(sys.argv[1])
    n_main = len(runs.get("main/ceil", []))
    print(f"== main: 4 clients x 64 in flight, 64 B payload; median of {n_main} interleaved rounds")
    print(f"{'target':34} {'rt/s':>9} {'(min-max)':>19} {'x ceil':>6} {'p50 us':>7} {'p99 us':>7}"
          f" {'broker CPU us/rt':>16} {'x ceil':>6} {'echo CPU us/rt':>14}")
    names = {"ceil": "ceiling + C echo", "brk": "broker (routing.lua) + C echo",
             "lua": "broker (routing.lua) + Lua echo", "hooks": "broker (hooks.lua) + C echo",
             "comp": "broker (composed.lua) + C echo", "pay": "broker (payload.lua) + C echo",
             "inv": "broker + Lua inventory service", "nats": "nats-server + NATS echo"}
    names = {t: n for t, n in names.items() if t in ("ceil", "brk", "lua") or runs.get(f"main/{t}")}
    c_rate = med(runs, "main/ceil", "rt_per_s")
    c_cpu = med(runs, "main/ceil", "broker_sched_us_per_rt")
    for t, name in names.items():
        lab = f"main/{t}"
        rate = med(runs, lab, "rt_per_s")
        lo, hi = spread(runs, lab, "rt_per_s")
        cpu = med(runs, lab, "broker_sched_us_per_rt")
        print(f"{name:34} {fmt(rate):>9} {fmt(lo) + '-' + fmt(hi):>19} {fmt(ratio(rate, c_rate), 2):>6}"
              f" {fmt(med(runs, lab, 'p50_us'), 0):>7} {fmt(med(runs, lab, 'p99_us'), 0):>7}"
              f" {fmt(cpu, 2):>16} {fmt(ratio(cpu, c_cpu), 2):>6}"
              f" {fmt(med(runs, lab, 'echo_sched_us_per_rt'), 2):>14}")
    print("   (CPU: the run time of all the server's threads over the window (schedstat), per round trip;"
          " a Lua service's CPU is inside the broker's; nats-server's is its own)")
    print("   paired, round by round (median, range of the rounds' ratios to the ceiling's run):")
    for t in [t for t in names if t != "ceil"]:
        print(f"     {names[t]:32} throughput {fmt_paired(paired(runs, f'main/{t}', 'main/ceil', 'rt_per_s'))}"
              f"   CPU/rt {fmt_paired(paired(runs, f'main/{t}', 'main/ceil', 'broker_sched_us_per_rt'))}")

    if runs.get("rate/ceil"):
        print()
        rate = runs["rate/ceil"][0].get("rate", "?")
        print(f"== rate: 4 clients x 64 in flight, 64 B, held at {rate} round trips/s: CPU per round trip")
        print(f"{'target':34} {'rt/s':>9} {'p50 us':>7} {'broker CPU us/rt':>16} {'x ceil':>6} {'echo CPU us/rt':>14}")
        r_cpu = med(runs, "rate/ceil", "broker_sched_us_per_rt")
        for t in ("ceil", "brk"):
            lab = f"rate/{t}"
            cpu = med(runs, lab, "broker_sched_us_per_rt")
            print(f"{names[t]:34} {fmt(med(runs, lab, 'rt_per_s')):>9} {fmt(med(runs, lab, 'p50_us'), 0):>7}"
                  f" {fmt(cpu, 2):>16} {fmt(ratio(cpu, r_cpu), 2):>6}"
                  f" {fmt(med(runs, lab, 'echo_sched_us_per_rt'), 2):>14}")

    if runs.get("xbroker/4x64"):
        print()
        print("== across brokers: A -> nats-server -> B -> C echo (bench/xbroker.sh), beside one broker")
        print(f"{'target':34} {'rt/s':>9} {'p50 us':>7} {'w1 p50 us':>9} {'A us/rt':>8} {'B us/rt':>8}"
              f" {'nats us/rt':>10} {'total us/rt':>11}")
        print(f"{'one broker (main/brk)':34} {fmt(med(runs, 'main/brk', 'rt_per_s')):>9}"
              f" {fmt(med(runs, 'main/brk', 'p50_us'), 0):>7} {fmt(med(runs, 'w1/brk', 'p50_us'), 1):>9}"
              f" {fmt(med(runs, 'main/brk', 'broker_sched_us_per_rt'), 2):>8} {'-':>8} {'-':>10}"
              f" {fmt(med(runs, 'main/brk', 'broker_sched_us_per_rt'), 2):>11}")
        x = "xbroker/4x64"
        print(f"{'two brokers, one nats-server':34} {fmt(med(runs, x, 'rt_per_s')):>9}"
              f" {fmt(med(runs, x, 'p50_us'), 0):>7} {fmt(med(runs, 'xbroker/w1', 'p50_us'), 1):>9}"
              f" {fmt(med(runs, x, 'broker_sched_us_per_rt'), 2):>8} {fmt(med(runs, x, 'echo_sched_us_per_rt'), 2):>8}"
              f" {fmt(med(runs, x, 'nats_cpu_us_per_rt'), 2):>10} {fmt(med(runs, x, 'bus_cpu_us_per_rt'), 2):>11}")

    print()
    print("== w1: 1 client x 1 in flight, 64 B, all on CPU 0: latency (median of the rounds' p50/p99)")
    print(f"{'target':34} {'p50 us':>7} {'x ceil':>6} {'p99 us':>7} {'rt/s':>8} {'broker CPU us/rt':>16}")
    c_p50 = med(runs, "w1/ceil", "p50_us")
    for t, name in names.items():
        lab = f"w1/{t}"
        if not runs.get(lab):
            continue
        p50 = med(runs, lab, "p50_us")
        print(f"{name:34} {fmt(p50, 1):>7} {fmt(ratio(p50, c_p50), 2):>6}"
              f" {fmt(med(runs, lab, 'p99_us'), 1):>7} {fmt(med(runs, lab, 'rt_per_s')):>8}"
              f" {fmt(med(runs, lab, 'broker_sched_us_per_rt'), 2):>16}")

    mx = sorted({tuple(l.split("/")[2:]) for l in runs if l.startswith("mx/")},
                key=lambda cp: (int(cp[0][1:]), int(cp[1][1:])))
    if mx:
        print()
        print("== matrix: x 64 in flight each; rt/s (x ceiling) and broker CPU us/rt (x ceiling)")
        cols = [("ceil", "ceiling"), ("def", "routing.lua"), ("hooks", "hooks.lua"),
                ("comp", "composed.lua"), ("pay", "payload.lua")]
        cols = [c for c in cols if any(l.startswith(f"mx/{c[0]}/") for l in runs)]
        print(f"{'clients payload':16}" + "".join(f" {n:>26}" for _, n in cols))
        for c, p in mx:
            base = f"mx/ceil/{c}/{p}"
            b_rate = med(runs, base, "rt_per_s")
            b_cpu = med(runs, base, "broker_sched_us_per_rt")
            cells = []
            for t, _ in cols:
                lab = f"mx/{t}/{c}/{p}"
                rate = med(runs, lab, "rt_per_s")
                cpu = med(runs, lab, "broker_sched_us_per_rt")
                if t == "ceil":
                    cells.append(f"{fmt(rate)} / {fmt(cpu, 2)} us")
                else:
                    cells.append(f"{fmt(ratio(rate, b_rate), 2)}x / {fmt(cpu, 2)} ({fmt(ratio(cpu, b_cpu), 2)}x)")
            print(f"{c[1:] + ' x ' + p[1:] + ' B':16}" + "".join(f" {cell:>26}" for cell in cells))

    scale = sorted({int(l.split("/")[1]) for l in runs if l.startswith("scale/")})
    if scale:
        print()
        print("== scale: broker (routing.lua) + C echo, 4 x 64, 64 B, with K registered idle peers")
        print(f"{'K':>6} {'rt/s':>9} {'(min-max)':>19} {'p50 us':>7} {'broker CPU us/rt':>16}")
        for k in scale:
            lab = f"scale/{k}"
            lo, hi = spread(runs, lab, "rt_per_s")
            print(f"{k:>6} {fmt(med(runs, lab, 'rt_per_s')):>9} {fmt(lo) + '-' + fmt(hi):>19}"
                  f" {fmt(med(runs, lab, 'p50_us'), 0):>7} {fmt(med(runs, lab, 'broker_sched_us_per_rt'), 2):>16}")

    fan = sorted({int(l.split("/")[2][1:]) for l in runs if l.startswith("fanout/")})
    if fan:
        print()
        print("== fanout: one publisher, N subscribers of a topic, 64 B (medians)")
        print(f"{'N':>5} {'server':>7} {'events/s':>10} {'deliveries/s':>13} {'server CPU us/delivery':>23}")
        for n in fan:
            for mode in ("bus", "nats"):
                lab = f"fanout/{mode}/s{n}"
                if lab not in runs:
                    continue
                print(f"{n:>5} {mode:>7} {fmt(med(runs, lab, 'events_per_s')):>10}"
                      f" {fmt(med(runs, lab, 'deliveries_per_s')):>13}"
                      f" {fmt(med(runs, lab, 'server_cpu_us_per_delivery'), 3):>23}")
            b = med(runs, f"fanout/bus/s{n}", "deliveries_per_s")
            nn = med(runs, f"fanout/nats/s{n}", "deliveries_per_s")
            if b and nn:
                print(f"{'':>5} {'bus/nats':>7} {'':>10} {fmt(ratio(b, nn), 2) + 'x':>13}"
                      f" {fmt(ratio(med(runs, f'fanout/bus/s{n}', 'server_cpu_us_per_delivery'), med(runs, f'fanout/nats/s{n}', 'server_cpu_us_per_delivery')), 2) + 'x':>23}")

    bc = {t: med(runs, f"bcast/{t}/s10", "server_cpu_us_per_delivery") for t in ("ceil", "brk")}
    if runs.get("bcast/brk/s10"):
        print()
        print("== broadcast: one publisher, events to \"broadcast\", 10 registered peers, 64 B (medians)")
        print(f"{'server':>8} {'events/s':>10} {'deliveries/s':>13} {'server CPU us/copy':>19}")
        for t, name in (("ceil", "ceiling"), ("brk", "broker")):
            lab = f"bcast/{t}/s10"
            print(f"{name:>8} {fmt(med(runs, lab, 'events_per_s')):>10} {fmt(med(runs, lab, 'deliveries_per_s')):>13}"
                  f" {fmt(bc[t], 3):>19}")
        print(f"   paired: broker/ceiling CPU per copy "
              f"{fmt_paired(paired(runs, 'bcast/brk/s10', 'bcast/ceil/s10', 'server_cpu_us_per_delivery'))}")

    irs = {l.split("/", 1)[1]: runs[l][-1] for l in runs if l.startswith("ir/")}
    if irs:
        print()
        print("== instructions per round trip (callgrind, 4 x 16, 64 B; user space of all the server's threads)")
        base = float(irs["ceiling"]["ir_per_rt"]) if "ceiling" in irs else None
        brk = float(irs["broker"]["ir_per_rt"]) if "broker" in irs else None
        print(f"{'target':12} {'Ir/rt':>8} {'x ceil':>7} {'- routing.lua':>14} {'in the hooks':>13} {'in the service':>15}")
        for t in ("ceiling", "broker", "hooks", "composed", "payload", "inv"):
            if t not in irs:
                continue
            ir = float(irs[t]["ir_per_rt"])
            print(f"{t:12} {fmt(ir):>8} {fmt(ratio(ir, base), 2):>7}"
                  f" {fmt(ir - brk) if brk and t not in ('ceiling', 'broker') else '-':>14}"
                  f" {fmt(float(irs[t].get('policy_ir_per_rt', 0))):>13}"
                  f" {fmt(float(irs[t].get('lua_service_ir_per_rt', 0))):>15}")

    print()
    print("== targets (issue 9)")
    b_rate, b_cpu = med(runs, "main/brk", "rt_per_s"), med(runs, "main/brk", "broker_sched_us_per_rt")
    l_rate = med(runs, "main/lua", "rt_per_s")
    checks = []
    r = ratio(b_rate, c_rate)
    checks.append(("throughput, routing.lua + C echo, >= 0.85 x ceiling", r, r is not None and r >= 0.85))
    r = ratio(b_cpu, c_cpu)
    checks.append(("broker CPU per round trip <= 1.3 x ceiling's", r, r is not None and r <= 1.3))
    r = ratio(l_rate, c_rate)
    checks.append(("throughput with the Lua echo > ceiling's (with its C echo)", r, r is not None and r > 1.0))
    r = ratio(med(runs, "w1/brk", "p50_us"), c_p50)
    checks.append(("window 1 latency p50 <= 1.15 x ceiling's", r, r is not None and r <= 1.15))
    if scale:
        lo_k, hi_k = scale[0], scale[-1]
        r = ratio(med(runs, f"scale/{hi_k}", "rt_per_s"), med(runs, f"scale/{lo_k}", "rt_per_s"))
        checks.append((f"throughput with {hi_k} peers >= 0.9 x with {lo_k}", r, r is not None and r >= 0.9))
    for text, r, ok in checks:
        print(f"  {text:62} {fmt(r, 3):>6}  {verdict(ok)}")

    def main_ratio(t, key):
        return ratio(med(runs, f"main/{t}", key), med(runs, "main/ceil", key))

    checks = []
    if runs.get("main/hooks"):
        r = main_ratio("hooks", "rt_per_s")
        checks.append(("hooks.lua: throughput >= 0.85 x ceiling", r, r is not None and r >= 0.85))
        r = main_ratio("hooks", "broker_sched_us_per_rt")
        checks.append(("hooks.lua: broker CPU per round trip <= 1.3 x ceiling's", r, r is not None and r <= 1.3))
    if runs.get("main/pay"):
        r = main_ratio("pay", "broker_sched_us_per_rt")
        checks.append(("payload.lua: broker CPU per round trip <= 1.6 x ceiling's", r, r is not None and r <= 1.6))
    if runs.get("main/inv"):
        r = main_ratio("inv", "rt_per_s")
        checks.append(("Lua inventory service: throughput >= ceiling's (C echo)", r, r is not None and r >= 1.0))
    if bc["brk"] is not None:
        r = ratio(bc["brk"], bc["ceil"])
        checks.append(("broadcast to 10: CPU per copy <= 1.2 x ceiling's", r, r is not None and r <= 1.2))
    if checks:
        print("== targets (issue 24)")
        for text, r, ok in checks:
            print(f"  {text:62} {fmt(r, 3):>6}  {verdict(ok)}")
    if (runs.get("main/comp") and runs.get("main/hooks")) or irs:
        print("== targets (issue 20)")
    if runs.get("main/comp") and runs.get("main/hooks"):
        # issue 20: the composed policy costs no more than hooks.lua did:
        # 1.59 x the ceiling's CPU per round trip when the issue was filed
        # (docs/performance.md); also shown against today's hooks.lua
        r = main_ratio("comp", "broker_sched_us_per_rt")
        print(f"  {'composed.lua: broker CPU per round trip <= 1.59 x ceiling s':62} {fmt(r, 3):>6}"
              f"  {verdict(r is not None and r <= 1.59)}")
        r2 = ratio(med(runs, "main/comp", "broker_sched_us_per_rt"), med(runs, "main/hooks", "broker_sched_us_per_rt"))
        print(f"  {'   (composed.lua / hooks.lua in this run)':62} {fmt(r2, 3):>6}")
    if "composed" in irs:
        # hooks.lua's hooks cost 9,644 Ir a round trip at 23d3152, when the
        # issue was filed (bench/profile.sh --target hooks)
        ir = float(irs["composed"]["policy_ir_per_rt"])
        print(f"  {'composed.lua: Ir in the hooks <= hooks.lua at 23d3152 (9,644)':62} {fmt(ir / 9644, 3):>6}"
              f"  {verdict(ir <= 9644)}")
    if runs.get("main/nats"):
        print("== beside nats-server (same envelopes, same load)")
        for t in ("brk", "lua", "comp"):
            if runs.get(f"main/{t}"):
                rr = ratio(med(runs, f"main/{t}", "rt_per_s"), med(runs, "main/nats", "rt_per_s"))
                rc = ratio(med(runs, f"main/{t}", "broker_sched_us_per_rt"),
                           med(runs, "main/nats", "broker_sched_us_per_rt"))
                print(f"  {names[t] + ' / nats-server':62} throughput {fmt(rr, 2)}x, server CPU/rt {fmt(rc, 2)}x")

    bad = False
    print()
    for label, rs in sorted(runs.items()):
        for kv in rs:
            if kv.get("failed"):
                print(f"  run {label}: FAILED to run")
                bad = True
            elif int(kv.get("lost", "0")) > 0:
                print(f"  run {label}: lost {kv['lost']} request(s)")
                bad = True
            elif int(kv.get("errors", "0")) > 0 or int(kv.get("stray", "0")) > 0:
                print(f"  run {label}: {kv['errors']} error answer(s), {kv['stray']} stray")
    total = sum(len(rs) for rs in runs.values())
    print(f"{total} runs; " + ("some lost requests or failed" if bad else "none lost a request"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
