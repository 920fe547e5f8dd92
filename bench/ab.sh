#!/usr/bin/env bash
# bench/ab.sh: one change measured alone, A against B, in interleaved rounds.
#
#   bench/ab.sh --a BUILD_DIR_A --b BUILD_DIR_B [--policy FILE] [--services DIR]
#               [--rounds N] [--duration S] [--clients C] [--window W] [--payload P]
#               [-- loadgen args...]
#
# Each round starts the ceiling, broker A and broker B (each from its build
# directory, same policy and services, each with the C echo unless
# --services names a directory with the service the load asks for), then
# runs the load against the three in a rotating order. Prints every run and
# the medians of the rounds' own ratios B/A and B/ceiling (throughput, and
# server CPU per round trip): both sides of a pair ran seconds apart, so a
# slow minute of a shared machine moves both.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A= B= POLICY=$ROOT/policies/routing.lua SERVICES='' ROUNDS=5 DURATION=3 CLIENTS=4 WINDOW=64 PAYLOAD=64
LG_EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --a) A=$(cd "$2" && pwd); shift ;;
    --b) B=$(cd "$2" && pwd); shift ;;
    --policy) POLICY=$2; shift ;;
    --services) SERVICES=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --payload) PAYLOAD=$2; shift ;;
    --) shift; LG_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$A" ] && [ -n "$B" ] || { echo "ab.sh: --a and --b are required" >&2; exit 2; }
OUT=$(mktemp -d /tmp/smartshop-ab.XXXXXX)
PORT=$((10000 + RANDOM % 20000))    # below the ephemeral ports
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start() {   # start NAME BUILD (BUILD empty: the ceiling) -> SPID_NAME, SPORT_NAME, EPID_NAME
  local name=$1 build=$2 pid try
  for try in 1 2 3 4 5; do            # a port someone else holds: the next
    PORT=$((PORT + 1))
    if [ -z "$build" ]; then
      "$A/smartshop-ceiling" --endpoint "tcp://127.0.0.1:$PORT" 2>> "$OUT/log" &
    else
      SMARTSHOP_LUA_PATH=$ROOT/lua "$build/smartshop-broker" --endpoint "tcp://127.0.0.1:$PORT" --log-level warn \
        --policy "$POLICY" --services "$SERVICES" 2>> "$OUT/log" &
    fi
    pid=$!; PIDS+=("$pid")
    sleep 0.2
    kill -0 "$pid" 2>/dev/null && break
  done
  printf -v "SPID_$name" %s "$pid"; printf -v "SPORT_$name" %s "$PORT"
  if [ -z "$SERVICES" ] || [ -z "$build" ]; then
    "$A/smartshop-bench-echo" --endpoint "tcp://127.0.0.1:$PORT" > "$OUT/echo.$name" 2>> "$OUT/log" &
    PIDS+=("$!")
    for _ in $(seq 50); do grep -q registered "$OUT/echo.$name" 2>/dev/null && break; sleep 0.1; done
  fi
}

for ((r = 1; r <= ROUNDS; r++)); do
  start ceil ""; start a "$A"; start b "$B"
  order=(ceil a b)
  for ((i = 0; i < 3; i++)); do
    t=${order[$(((i + r - 1) % 3))]}
    pv=SPID_$t; po=SPORT_$t
    extra=()
    [ "$t" != ceil ] && extra=(${LG_EXTRA[@]+"${LG_EXTRA[@]}"})
    line=$("$A/smartshop-loadgen" --endpoint "tcp://127.0.0.1:${!po}" --broker-pid "${!pv}" \
             --clients "$CLIENTS" --window "$WINDOW" --payload "$PAYLOAD" --warmup 1 --duration "$DURATION" \
             --label "ab/$t" ${extra[@]+"${extra[@]}"})
    echo "$line" >> "$OUT/results.txt"
    echo "round $r $t: $(echo "$line" | tr ' ' '\n' | grep -E '^(rt_per_s|broker_sched_us_per_rt|lost)=' | tr '\n' ' ')"
  done
  cleanup; PIDS=()
done
/usr/bin/python3 - "$OUT/results.txt" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    runs.setdefault(kv["label"], []).append(kv)
def col(t, k): return [float(r[k]) for r in runs[f"ab/{t}"]]
for k, name in (("rt_per_s", "throughput"), ("broker_sched_us_per_rt", "server CPU per round trip")):
    a, b, c = col("a", k), col("b", k), col("ceil", k)
    ba = statistics.median(y / x for x, y in zip(a, b))
    bc = statistics.median(y / x for x, y in zip(c, b))
    ac = statistics.median(y / x for x, y in zip(c, a))
    print(f"{name:28} A {statistics.median(a):10.2f}  B {statistics.median(b):10.2f}  ceiling {statistics.median(c):10.2f}"
          f"   B/A {ba:.3f}   A/ceil {ac:.3f}   B/ceil {bc:.3f}")
EOF
