#!/usr/bin/env bash
# bench/run.sh: the whole benchmark in one run (docs/performance.md).
#
#   bench/run.sh            full run, about 4-5 minutes on a 2-core machine
#   bench/run.sh --quick    a smoke run of a few seconds (CTest bench.smoke)
#
# Options:
#   --build-dir DIR   where smartshop-broker, -ceiling, -loadgen and
#                     -bench-echo are (default: build/ of the repository)
#   --rounds N        interleaved rounds of the main comparison (default 5)
#   --duration S      measured seconds of each main run (default 4)
#   --pin             broker/ceiling on CPU 0, load generator and echo on CPU 1
#                     (default: not pinned; the scheduler shares both cores)
#   --out DIR         keep the raw results and logs there (default: a temp dir)
#   --port N          first TCP port to use (default: random in 20000-39999)
#   --rate R          round trips/s of the fixed-rate runs (default 100000)
#   --main-only       only the interleaved main, rate and w1 rounds (no
#                     matrix, no scale): the quick check while working on
#                     the hot path
#
# What it runs (each a fresh process set unless said otherwise):
#   main     4 clients x 64 in flight, 64 B, interleaved, --rounds rounds,
#            rotating the order each round:
#              ceil   the ceiling (bench/ceiling.c) with the C echo
#              brk    the broker, policies/routing.lua, the C echo
#              lua    the broker with the in-process Lua echo (services/echo.lua)
#              hooks  the broker, bench/policies/hooks.lua (filter + route by hand)
#              comp   the broker, bench/policies/composed.lua (the same as three
#                     library rules, lua/smartshop)
#              pay    the broker, bench/policies/payload.lua (filter reads the payload)
#              inv    the broker hosting bench/services/bench-inventory.lua
#                     (decodes its payload, answers a table it builds)
#              nats   nats-server (Debian's package) with bench/nats_rr.c's echo
#                     and load: the same envelopes, over NATS's text protocol
#   rate     4 x 64, 64 B, held at --rate round trips/s (default 100000),
#            ceiling and broker: CPU per round trip at one rate
#   w1       1 client x 1 in flight, 64 B, on the same processes, all pinned
#            to CPU 0 for this run: latency
#   matrix   1, 4, 8 clients x 64 in flight, payloads 64 B and 4 KB, against
#            the ceiling, the broker with routing.lua, with
#            bench/policies/hooks.lua (filter+route reading dst/action) and
#            with bench/policies/payload.lua (filter also reads msg.payload)
#   scale    the broker with 10 and with 1,000 registered idle peers
#            (distinct names), 4 x 64, 64 B; interleaved rounds
#   fanout   one publisher, 10 and 100 subscribers of a topic (bench/fanout.c),
#            the broker beside nats-server: deliveries/s, CPU per delivery
#   xbroker  request/response through two brokers and one nats-server
#            (bench/xbroker.sh): 4 x 64 and 1 x 1, A's, B's and the server's
#            CPU per round trip
#   bcast    one publisher, events to "broadcast", 10 registered peers: the
#            broker beside the ceiling doing the same fan-out; 3 rounds
#   ir       instructions per round trip under callgrind (bench/profile.sh)
#            of the ceiling, routing.lua, hooks.lua, composed.lua,
#            payload.lua and the Lua inventory service: the noise-robust
#            second measure (not with --quick or --main-only)
# nats-server is installed (apt-get) if missing and we are root; else the
# NATS rows are skipped, and said.
# Then bench/report.py prints medians and ours/ceiling ratios. Exit status
# 1 if any run lost a request or could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build
QUICK=0
ROUNDS=5
DURATION=4
PIN=0
MAIN_ONLY=0
OUT=
PORT=$((20000 + RANDOM % 20000))
RATE=100000

while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --build-dir) BUILD=$(cd "$2" && pwd); shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --pin) PIN=1 ;;
    --main-only) MAIN_ONLY=1 ;;
    --out) OUT=$2; shift ;;
    --port) PORT=$2; shift ;;
    --rate) RATE=$2; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in smartshop-broker smartshop-ceiling smartshop-loadgen smartshop-bench-echo smartshop-fanout \
            smartshop-nats-rr; do
  if [ ! -x "$BUILD/$tool" ]; then
    echo "run.sh: $BUILD/$tool not found: build first (cmake --build build -j2)" >&2
    exit 2
  fi
done

if [ -z "$OUT" ]; then
  OUT=$(mktemp -d /tmp/smartshop-bench.XXXXXX)
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
LOG=$OUT/servers.log
: > "$RESULTS"
: > "$LOG"

if [ $QUICK = 1 ]; then
  ROUNDS=1
  WARMUP=0.3; DURATION=0.7
  W1_WARMUP=0.2; W1_DURATION=0.5
  MX_WARMUP=0.2; MX_DURATION=0.5
  MX_CLIENTS="4"; MX_PAYLOADS="4096"
  SCALE_ROUNDS=1; SCALE_PEERS="10 100"; SC_WARMUP=0.3; SC_DURATION=0.7
else
  WARMUP=1
  W1_WARMUP=0.5; W1_DURATION=2
  MX_WARMUP=0.5; MX_DURATION=2
  MX_CLIENTS="1 4 8"; MX_PAYLOADS="64 4096"
  SCALE_ROUNDS=3; SCALE_PEERS="10 1000"; SC_WARMUP=1; SC_DURATION=3
fi

if [ $PIN = 1 ]; then
  SERVER_CPU=(taskset -c 0)
  CLIENT_CPU=(taskset -c 1)
else
  SERVER_CPU=()
  CLIENT_CPU=()
fi

# Every process this script starts, so that it stops exactly those.
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

FAILED=0

# start_server NAME KIND [broker args...] -> sets PID_<NAME>, PORT_<NAME>
#   KIND: ceiling | broker; with KIND broker and no --services in the args,
#   the broker runs without Lua services.
start_server() {
  local name=$1 kind=$2 ep pid try
  shift 2
  for try in 1 2 3 4 5; do       # a port someone else holds: take the next
    PORT=$((PORT + 1))
    ep=tcp://127.0.0.1:$PORT
    echo "== $name ($kind) on $ep $*" >> "$LOG"
    if [ "$kind" = ceiling ]; then
      "${SERVER_CPU[@]}" "$BUILD/smartshop-ceiling" --endpoint "$ep" 2>> "$LOG" &
    elif [ "$kind" = nats ]; then
      "${SERVER_CPU[@]}" "$NATS" -a 127.0.0.1 -p "$PORT" >> "$LOG" 2>&1 &
    else
      "${SERVER_CPU[@]}" "$BUILD/smartshop-broker" --endpoint "$ep" --log-level warn "$@" 2>> "$LOG" &
    fi
    pid=$!
    STARTED+=("$pid")
    sleep 0.15
    if [ "$kind" = nats ]; then   # up when its port answers
      for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    fi
    kill -0 "$pid" 2>/dev/null && break
    wait "$pid" 2>/dev/null || true
  done
  printf -v "PID_$name" %s "$pid"
  printf -v "PORT_$name" %s "$PORT"
}

# start_echo NAME: the C echo service on NAME's port -> sets ECHO_<NAME>
start_echo() {
  local name=$1 port_var=PORT_$1 pid out=$OUT/echo.$1.$RANDOM
  if [ "$name" = nats ]; then
    "${CLIENT_CPU[@]}" "$BUILD/smartshop-nats-rr" --role echo --endpoint "127.0.0.1:${!port_var}" > "$out" 2>> "$LOG" &
  else
    "${CLIENT_CPU[@]}" "$BUILD/smartshop-bench-echo" --endpoint "tcp://127.0.0.1:${!port_var}" > "$out" 2>> "$LOG" &
  fi
  pid=$!
  STARTED+=("$pid")
  printf -v "ECHO_$name" %s "$pid"
  for _ in $(seq 100); do
    grep -q registered "$out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: the echo service for $name did not register" >&2
  FAILED=1
  return 1
}

# stop NAME...: stops the server NAME and its echo, if any
stop() {
  local name var pid
  for name in "$@"; do
    for var in ECHO_$name PID_$name; do
      pid=${!var:-}
      [ -n "$pid" ] || continue
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "run.sh: $var ($pid) did not stop on SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      wait "$pid" 2>/dev/null || true
      printf -v "$var" %s ""
    done
  done
}

# lg NAME LABEL [loadgen args...]: one load run against server NAME
lg() {
  local name=$1 label=$2
  shift 2
  local port_var=PORT_$name pid_var=PID_$name echo_var=ECHO_$name line extra=()
  local echo_args=() tool=("$BUILD/smartshop-loadgen" --endpoint "tcp://127.0.0.1:${!port_var}" --broker-pid)
  [ -n "${!echo_var:-}" ] && echo_args=(--echo-pid "${!echo_var}")
  [ "$name" = nats ] && tool=("$BUILD/smartshop-nats-rr" --role load --endpoint "127.0.0.1:${!port_var}" --server-pid)
  [ "$name" = inv ] && extra=(--service bench-inventory --action stock)
  if line=$("${CLIENT_CPU[@]}" "${tool[@]}" "${!pid_var}" "${echo_args[@]}" --label "$label" \
              ${extra[@]+"${extra[@]}"} "$@"); then
    echo "$line" >> "$RESULTS"
    printf '  %-26s %s\n' "$label" "$(echo "$line" | tr ' ' '\n' |
      grep -E '^(rt_per_s|p50_us|p99_us|errors|lost|broker_cpu_us_per_rt)=' | tr '\n' ' ')"
  else
    echo "run.sh: load run $label against $name failed" >&2
    echo "label=$label failed=1" >> "$RESULTS"
    FAILED=1
  fi
}

# How busy the machine is without us: CPU time used by anything over one
# second, in percent of all CPUs. Others' load skews every number here.
machine_busy() {
  local a b
  a=$(awk '/^cpu /{printf "%.0f %.0f\n", $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{printf "%.0f %.0f\n", $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  echo "$a $b" | awk '{d = $4 - $2; printf "%.0f", (d > 0 ? 100 * ($3 - $1) / d : 0)}'
}

REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- src 2>/dev/null)" ]; then REV="$REV+dirty-src"; fi
if [ $QUICK = 1 ]; then BUSY_BEFORE=0; else BUSY_BEFORE=$(machine_busy); fi
echo "smartshop benchmark: $(nproc) CPUs, pin=$PIN, quick=$QUICK, broker $REV; raw results in $RESULTS"
echo "machine busy before the run: ${BUSY_BEFORE}% of all CPUs"
if [ "$BUSY_BEFORE" -gt 10 ]; then
  echo "run.sh: WARNING: other processes use ${BUSY_BEFORE}% of the CPUs: the numbers will be skewed" >&2
fi
echo "rev=$REV busy_before=$BUSY_BEFORE pin=$PIN quick=$QUICK" > "$OUT/meta.txt"

# nats-server: Debian's package, installed here if it is missing
NATS=$(command -v nats-server || true)
if [ -z "$NATS" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "installing nats-server (apt-get install nats-server)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >> "$LOG" 2>&1 || true
  NATS=$(command -v nats-server || true)
fi
[ -n "$NATS" ] || echo "run.sh: nats-server not installed (apt-get install nats-server): no NATS rows" >&2

# --- main and w1: interleaved rounds --------------------------------------
TARGETS=(ceil brk lua hooks comp pay inv)
[ -n "$NATS" ] && TARGETS+=(nats)
[ $QUICK = 1 ] && TARGETS=(ceil brk lua comp inv $([ -n "$NATS" ] && echo nats))
for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r/$ROUNDS"
  for t in "${TARGETS[@]}"; do
    case $t in
      ceil)  start_server ceil ceiling ;;
      brk)   start_server brk broker --policy "$ROOT/policies/routing.lua" --services '' ;;
      lua)   start_server lua broker --policy "$ROOT/policies/routing.lua" --services "$ROOT/services" ;;
      hooks) start_server hooks broker --policy "$ROOT/bench/policies/hooks.lua" --services '' ;;
      comp)  start_server comp broker --policy "$ROOT/bench/policies/composed.lua" --services '' ;;
      pay)   start_server pay broker --policy "$ROOT/bench/policies/payload.lua" --services '' ;;
      inv)   start_server inv broker --policy "$ROOT/policies/routing.lua" --services "$ROOT/bench/services" ;;
      nats)  start_server nats nats ;;
    esac
  done
  for t in "${TARGETS[@]}"; do
    case $t in ceil|brk|hooks|comp|pay|nats) start_echo "$t" || true ;; esac
  done
  # rotate the order each round, so no target always runs first
  order=()
  for ((i = 0; i < ${#TARGETS[@]}; i++)); do
    order+=("${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}")
  done
  for t in "${order[@]}"; do
    lg "$t" "main/$t" --clients 4 --window 64 --payload 64 --warmup "$WARMUP" --duration "$DURATION"
  done
  # the same 4 x 64 load held at one rate both can carry: CPU per round
  # trip without the effect of batching (a saturated forwarder batches more)
  for t in "${order[@]}"; do
    case $t in ceil|brk) ;; *) continue ;; esac
    lg "$t" "rate/$t" --clients 4 --window 64 --payload 64 --rate "$RATE" \
      --warmup "$W1_WARMUP" --duration "$W1_DURATION"
  done
  # window 1 on one CPU: every process of the run on CPU 0. Across the two
  # vCPUs of this VM each wake-up of a sleeping peer costs ~50 us (an IPI to
  # an idle vCPU), at random, which would swamp what the forwarder does.
  for var in PID_ceil PID_brk PID_lua PID_nats ECHO_ceil ECHO_brk ECHO_nats; do
    if [ -n "${!var:-}" ]; then taskset -a -p -c 0 "${!var}" > /dev/null || true; fi
  done
  for t in "${order[@]}"; do
    case $t in ceil|brk|lua|nats) ;; *) continue ;; esac
    CLIENT_CPU_SAVED=("${CLIENT_CPU[@]}")
    CLIENT_CPU=(taskset -c 0)
    lg "$t" "w1/$t" --clients 1 --window 1 --payload 64 --warmup "$W1_WARMUP" --duration "$W1_DURATION"
    CLIENT_CPU=("${CLIENT_CPU_SAVED[@]}")
  done
  stop "${TARGETS[@]}"
done

if [ $MAIN_ONLY = 1 ]; then
  MX_CLIENTS=""; SCALE_ROUNDS=0
fi

# --- matrix: policies x clients x payloads --------------------------------
if [ -n "$MX_CLIENTS" ]; then
  echo "matrix"
  start_server ceil ceiling
  start_server def broker --policy "$ROOT/policies/routing.lua" --services ''
  start_server hooks broker --policy "$ROOT/bench/policies/hooks.lua" --services ''
  start_server pay broker --policy "$ROOT/bench/policies/payload.lua" --services ''
  start_server comp broker --policy "$ROOT/bench/policies/composed.lua" --services ''
  for t in ceil def hooks pay comp; do start_echo "$t" || true; done
  for c in $MX_CLIENTS; do
    for p in $MX_PAYLOADS; do
      for t in ceil def hooks comp pay; do
        lg "$t" "mx/$t/c$c/p$p" --clients "$c" --window 64 --payload "$p" \
          --warmup "$MX_WARMUP" --duration "$MX_DURATION"
      done
    done
  done
  stop ceil def hooks pay comp
fi

# --- scale: 10 vs 1,000 registered peers -----------------------------------
echo "scale"
for ((r = 1; r <= SCALE_ROUNDS; r++)); do
  peers_order=($SCALE_PEERS)
  if [ $((r % 2)) = 0 ]; then peers_order=($(printf '%s\n' $SCALE_PEERS | tac)); fi
  for k in "${peers_order[@]}"; do
    start_server sc broker --policy "$ROOT/policies/routing.lua" --services ''
    start_echo sc || true
    lg sc "scale/$k" --clients 4 --window 64 --payload 64 --idle-peers "$k" \
      --warmup "$SC_WARMUP" --duration "$SC_DURATION"
    stop sc
  done
done

# --- fanout: one publisher, 10 and 100 subscribers of a topic -------------
# The broker's topic events beside nats-server (Debian's package) doing the
# same work in the same run: events and deliveries a second, server CPU
# per delivery. Skipped, and said, where nats-server is not installed.
if [ $MAIN_ONLY = 0 ]; then
  echo "fanout"
  if [ $QUICK = 1 ]; then FAN_SUBS="10"; FO_WARMUP=0.2; FO_DURATION=0.5; else FAN_SUBS="10 100"; FO_WARMUP=0.5; FO_DURATION=2; fi
  for ((r = 1; r <= (QUICK ? 1 : 3); r++)); do
    for n in $FAN_SUBS; do
      start_server fo broker --policy '' --services ''
      if line=$("${CLIENT_CPU[@]}" "$BUILD/smartshop-fanout" --mode bus --endpoint "tcp://127.0.0.1:$PORT_fo" \
                  --server-pid "$PID_fo" --subs "$n" --warmup "$FO_WARMUP" --duration "$FO_DURATION" \
                  --label "fanout/bus/s$n"); then
        echo "$line" >> "$RESULTS"; echo "  $line"
      else
        echo "label=fanout/bus/s$n failed=1" >> "$RESULTS"; FAILED=1
      fi
      stop fo
      [ -n "$NATS" ] || continue
      start_server fonats nats
      nats_pid=$PID_fonats
      if line=$("${CLIENT_CPU[@]}" "$BUILD/smartshop-fanout" --mode nats --endpoint "127.0.0.1:$PORT_fonats" \
                  --server-pid "$nats_pid" --subs "$n" --warmup "$FO_WARMUP" --duration "$FO_DURATION" \
                  --label "fanout/nats/s$n"); then
        echo "$line" >> "$RESULTS"; echo "  $line"
      else
        echo "label=fanout/nats/s$n failed=1" >> "$RESULTS"; FAILED=1
      fi
      stop fonats
    done
  done
fi

# --- xbroker: request/response through two brokers and one nats-server ---
# bench/xbroker.sh (docs/performance.md, "Across brokers"): its lines go to
# the results beside the one-broker rows. Skipped where nats-server is not.
if [ $MAIN_ONLY = 0 ] && [ -n "$NATS" ]; then
  echo "across brokers (A -> nats-server -> B -> echo)"
  if [ $QUICK = 1 ]; then XB_D=0.5; XB_W=0.2; else XB_D=$DURATION; XB_W=1; fi
  if xb=$("${CLIENT_CPU[@]}" "$ROOT/bench/xbroker.sh" "$BUILD" "$OUT" "$((PORT + 900))" "$XB_D" "$XB_W"); then
    echo "$xb" >> "$RESULTS"
    echo "$xb" | tr ' ' '\n' | grep -E '^(label|rt_per_s|p50_us|broker_cpu_us_per_rt|echo_cpu_us_per_rt|nats_cpu_us_per_rt|bus_cpu_us_per_rt)=' |
      paste -sd' ' | sed 's/ label=/\n  label=/g; s/^/  /'
  else
    echo "run.sh: the cross-broker row failed (see $OUT/xbroker.log)" >&2
    echo "label=xbroker failed=1" >> "$RESULTS"; FAILED=1
  fi
fi

# --- bcast: events to "broadcast", 10 registered peers -------------------
# The broker's fan-out (T5) beside the ceiling's (a copy to each registered
# peer, nothing checked): server CPU per delivered copy.
if [ $MAIN_ONLY = 0 ]; then
  echo "broadcast"
  if [ $QUICK = 1 ]; then BC_ROUNDS=1; BC_WARMUP=0.2; BC_DURATION=0.5; else BC_ROUNDS=3; BC_WARMUP=0.5; BC_DURATION=2; fi
  for ((r = 1; r <= BC_ROUNDS; r++)); do
    bc_order=(ceil brk)
    [ $((r % 2)) = 0 ] && bc_order=(brk ceil)
    for t in "${bc_order[@]}"; do
      if [ $t = ceil ]; then start_server bc ceiling; else
        start_server bc broker --policy "$ROOT/policies/routing.lua" --services ''; fi
      if line=$("${CLIENT_CPU[@]}" "$BUILD/smartshop-fanout" --mode broadcast --endpoint "tcp://127.0.0.1:$PORT_bc" \
                  --server-pid "$PID_bc" --subs 10 --warmup "$BC_WARMUP" --duration "$BC_DURATION" \
                  --label "bcast/$t/s10"); then
        echo "$line" >> "$RESULTS"; echo "  $line"
      else
        echo "label=bcast/$t/s10 failed=1" >> "$RESULTS"; FAILED=1
      fi
      stop bc
    done
  done
fi

# --- ir: instructions per round trip (callgrind), the noise-robust view ---
# What each forwarder executes per round trip does not depend on how busy
# the machine is (kernel time is not in it: a ratio of these overstates the
# CPU ratio; a difference of two is the work one adds over the other).
if [ $MAIN_ONLY = 0 ] && [ $QUICK = 0 ]; then
  if command -v valgrind > /dev/null; then
    echo "instructions (callgrind)"
    for t in ceiling broker hooks composed payload inv; do
      if line=$(bash "$ROOT/bench/profile.sh" --target "$t" --seconds 3 --build-dir "$BUILD" \
                  --out "$OUT/callgrind" 2>> "$LOG" | sed -n 's/^summary //p') && [ -n "$line" ]; then
        echo "$line" >> "$RESULTS"; echo "  $line"
      else
        echo "run.sh: callgrind run of $t failed (see $LOG)" >&2
      fi
    done
  else
    echo "run.sh: valgrind not installed (apt-get install valgrind): no instruction counts" >&2
  fi
fi

if [ $QUICK = 1 ]; then BUSY_AFTER=0; else BUSY_AFTER=$(machine_busy); fi
echo "machine busy after the run: ${BUSY_AFTER}% of all CPUs"
echo "busy_after=$BUSY_AFTER" >> "$OUT/meta.txt"
echo
/usr/bin/python3 "$ROOT/bench/report.py" "$RESULTS" || FAILED=1
if [ $FAILED != 0 ]; then
  echo "run.sh: FAILED (see above and $LOG)" >&2
  exit 1
fi
