#!/usr/bin/env bash
# bench/profile.sh: where the broker's instructions go, per round trip.
#
# Runs one forwarder under valgrind --tool=callgrind with the benchmark's
# load (C echo, loadgen), collects only while the load runs, and prints the
# instructions (Ir) per round trip: in total, by part of the message path,
# and the top functions. Instruction counts do not depend on how busy the
# machine is, so this is the stable way to compare on a noisy machine.
#
#   bench/profile.sh [--target broker|hooks|composed|payload|lua|inv|ceiling]
#                    [--payload BYTES] [--seconds S] [--clients N] [--window W]
#                    [--perf] [--build-dir DIR] [--out DIR]
#
# --perf: instead of callgrind, sample the forwarder at full speed with
# `perf record` (cycles by shared object, thread and function, kernel
# included); on a busy machine these shares move from run to run.
#
#   broker   smartshop-broker, policies/routing.lua, C echo (default)
#   hooks    the same with bench/policies/hooks.lua
#   composed the same with bench/policies/composed.lua
#   payload  the same with bench/policies/payload.lua
#   lua      the broker hosting services/echo.lua (no remote echo)
#   inv      the broker hosting bench/services/bench-inventory.lua
#   ceiling  bench/ceiling.c with the C echo
#
# The callgrind file stays in --out (default a temp dir) for
# callgrind_annotate or kcachegrind. Under valgrind the forwarder runs ~50x
# slower; latencies printed by the load generator mean nothing here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build
TARGET=broker
PAYLOAD=64
SECONDS_=8
CLIENTS=4
WINDOW=16
OUT=
PERF=0
while [ $# -gt 0 ]; do
  case $1 in
    --target) TARGET=$2; shift ;;
    --payload) PAYLOAD=$2; shift ;;
    --seconds) SECONDS_=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --perf) PERF=1 ;;
    --build-dir) BUILD=$(cd "$2" && pwd); shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/smartshop-profile.XXXXXX)
mkdir -p "$OUT"
# below the ephemeral range (32768-60999), which the load's own outgoing
# connections draw from: a port there could be taken under the server's
# feet (a callgrind run of run.sh failed on it); one someone listens on
# is skipped
PORT=$((20000 + RANDOM % 12000))
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
EP=tcp://127.0.0.1:$PORT
CG=$OUT/$TARGET.p$PAYLOAD.callgrind

export SMARTSHOP_LUA_PATH=${SMARTSHOP_LUA_PATH:-$ROOT/lua}   # valgrind hides where the program is
VG=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$CG")
case $TARGET in
  broker)  CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/policies/routing.lua" --services '') ;;
  hooks)   CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/bench/policies/hooks.lua" --services '') ;;
  payload) CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/bench/policies/payload.lua" --services '') ;;
  composed) CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/bench/policies/composed.lua" --services '') ;;
  inv)     CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/policies/routing.lua" --services "$ROOT/bench/services") ;;
  lua)     CMD=("$BUILD/smartshop-broker" --endpoint "$EP" --log-level warn --policy "$ROOT/policies/routing.lua" --services "$ROOT/services") ;;
  ceiling) CMD=("$BUILD/smartshop-ceiling" --endpoint "$EP") ;;
  *) echo "profile.sh: unknown target $TARGET" >&2; exit 2 ;;
esac

if [ $PERF = 1 ]; then
  VG=()
  [ "$WINDOW" = 16 ] && WINDOW=64
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"${VG[@]}" "${CMD[@]}" 2> "$OUT/valgrind.log" &
SERVER=$!
PIDS+=("$SERVER")
sleep 2
LG_ARGS=()
[ "$TARGET" = inv ] && LG_ARGS=(--service bench-inventory --action stock)
if [ "$TARGET" != lua ] && [ "$TARGET" != inv ]; then
  "$BUILD/smartshop-bench-echo" --endpoint "$EP" > /dev/null 2>> "$OUT/valgrind.log" &
  PIDS+=("$!")
fi
"$BUILD/smartshop-loadgen" --endpoint "$EP" --clients "$CLIENTS" --window "$WINDOW" --payload "$PAYLOAD" \
  --warmup 2 --duration "$SECONDS_" --ready-timeout 60 --label "profile/$TARGET" ${LG_ARGS[@]+"${LG_ARGS[@]}"} \
  > "$OUT/loadgen.txt" &
LG=$!
PIDS+=("$LG")
sleep 2
if [ $PERF = 1 ]; then
  DATA=$OUT/$TARGET.p$PAYLOAD.perf.data
  perf record -F 2000 -g -p "$SERVER" -o "$DATA" -- sleep "$(( SECONDS_ > 3 ? SECONDS_ - 2 : 1 ))" 2> /dev/null
  wait "$LG"
  kill "$SERVER"
  wait "$SERVER" || true
  cat "$OUT/loadgen.txt"
  for sort in dso comm; do
    echo "== samples by $sort"
    perf report -i "$DATA" --no-children --sort "$sort" --stdio 2> /dev/null | grep -E '^ +[0-9.]+%'
  done
  echo "== top functions"
  perf report -i "$DATA" --no-children --sort dso,sym --stdio -g none 2> /dev/null | grep -E '^ +[0-9.]+%' | head -30
  echo "perf data: $DATA"
  exit 0
fi
callgrind_control -i on "$SERVER" > /dev/null
wait "$LG"
callgrind_control -i off "$SERVER" > /dev/null
kill "$SERVER"
wait "$SERVER" || true
cat "$OUT/loadgen.txt"
/usr/bin/python3 "$ROOT/bench/cgsummary.py" "$CG" "$TARGET"
echo "callgrind file: $CG"
