#!/usr/bin/env bash
# bench/xbroker.sh: the cross-broker row (docs/performance.md, "Across
# brokers"): request/response through two brokers and one nats-server.
#
#   bench/xbroker.sh BUILD_DIR OUT_DIR PORT DURATION WARMUP
#
# Starts nats-server, broker A and broker B (both --nats to that server) on
# free loopback ports from PORT on (a port another process took meanwhile is
# skipped: make test runs this beside other tests), smartshop-bench-echo registered on B, and
# runs smartshop-loadgen on A: every request crosses A -> NATS -> B -> echo
# and back. Two runs: 4 clients x 64 in flight (throughput, CPU) and 1 x 1
# (latency). Prints one key=value line per run, the loadgen's fields
# (rt_per_s, p50_us, ...; broker_cpu_us_per_rt is A's, echo_cpu_us_per_rt
# is B's) plus nats_cpu_us_per_rt (the server's, sampled over the measured
# window) and bus_cpu_us_per_rt (A + B + the server). bench/run.sh calls
# it and keeps the lines beside the one-broker rows. Exit 1 if a run
# failed or could not start; 3 if nats-server is not installed.
set -euo pipefail

BUILD=$1 OUT=$2 PORT=$3 DURATION=$4 WARMUP=$5
NATS=$(command -v nats-server || true)
[ -n "$NATS" ] || { echo "xbroker.sh: nats-server not installed" >&2; exit 3; }
LOG=$OUT/xbroker.log
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# FREE_PORT: the next port from $NEXT_PORT on that nothing listens on.
# Set in this shell, not printed for $(...): a subshell's NEXT_PORT would
# not advance, and a retry after "Address already in use" would pick the
# same taken port again.
NEXT_PORT=$PORT
free_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do NEXT_PORT=$((NEXT_PORT + 1)); done
  FREE_PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 1))
}

# nats-server, again on the next free port if it could not listen
for _ in 1 2 3 4 5; do
  free_port; NPORT=$FREE_PORT
  "$NATS" -a 127.0.0.1 -p "$NPORT" >> "$LOG" 2>&1 &
  NPID=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break
    kill -0 "$NPID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$NPID" 2>/dev/null && break
done
PIDS+=("$NPID")

start_broker() {   # ID: sets BROKER_PID and BROKER_PORT once it joined the bus
  local id=$1 log=$OUT/xbroker.$1.log pid port attempt
  for attempt in 1 2 3 4 5; do
    free_port; port=$FREE_PORT
    "$BUILD/smartshop-broker" --endpoint "tcp://127.0.0.1:$port" --policy '' --services '' \
      --state-dir '' --nats "nats://127.0.0.1:$NPORT" --broker-id "$id" > "$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
      if grep -q "joined the bus" "$log" 2>/dev/null; then
        BROKER_PID=$pid BROKER_PORT=$port; return 0
      fi
      kill -0 "$pid" 2>/dev/null || break     # exited: its port was taken meanwhile?
      sleep 0.1
    done
    grep -q "Address already in use" "$log" 2>/dev/null || break
  done
  echo "xbroker.sh: broker $id did not join the bus (see $log)" >&2
  return 1
}
start_broker A; APID=$BROKER_PID APORT=$BROKER_PORT
start_broker B; BPID=$BROKER_PID BPORT=$BROKER_PORT
"$BUILD/smartshop-bench-echo" --endpoint "tcp://127.0.0.1:$BPORT" > "$OUT/xbroker.echo.out" 2>> "$LOG" &
PIDS+=("$!")
for _ in $(seq 100); do grep -q registered "$OUT/xbroker.echo.out" 2>/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run LABEL [loadgen args]: the loadgen on A, the server's CPU over its window
run() {
  local label=$1 line n0 n1 tick
  shift
  tick=$(getconf CLK_TCK)
  ( sleep "$WARMUP"; cpu_ticks "$NPID" > "$OUT/xbroker.n0"; sleep "$DURATION"
    cpu_ticks "$NPID" > "$OUT/xbroker.n1" ) &
  local sampler=$!
  if ! line=$("$BUILD/smartshop-loadgen" --endpoint "tcp://127.0.0.1:$APORT" --broker-pid "$APID" \
                --echo-pid "$BPID" --warmup "$WARMUP" --duration "$DURATION" --label "$label" "$@"); then
    wait "$sampler" || true
    echo "label=$label failed=1"
    return 1
  fi
  wait "$sampler" || true
  n0=$(cat "$OUT/xbroker.n0") n1=$(cat "$OUT/xbroker.n1")
  echo "$line" | awk -v d=$((n1 - n0)) -v tick="$tick" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    rt = f["rt"] + 0; nats = rt > 0 ? d * 1e6 / tick / rt : 0
    printf "%s nats_cpu_us_per_rt=%.2f bus_cpu_us_per_rt=%.2f\n", $0, nats,
           f["broker_cpu_us_per_rt"] + f["echo_cpu_us_per_rt"] + nats }'
}

status=0
run xbroker/4x64 --clients 4 --window 64 --payload 64 || status=1
run xbroker/w1 --clients 1 --window 1 --payload 64 || status=1
exit $status
