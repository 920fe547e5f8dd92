#!/usr/bin/env bash
# The C examples against the real broker: examples/c/echo_service serves,
# examples/c/test_client asks and must print the echoed payload.
# Usage: run_c_examples.sh BROKER EXAMPLES_DIR
set -euo pipefail
broker=$1 examples=$2
log=$(mktemp -d)
echo_pid= broker_pid=
trap 'kill $echo_pid $broker_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log"' EXIT
fail() { echo "FAIL: $*"; echo "--- echo_service"; cat "$log/echo" 2>/dev/null; echo "--- broker"; cat "$log/broker"; exit 1; }
# A port another test's broker may hold (ctest -j): the broker says it is
# listening, or exits and the next port is tried. Connecting to somebody
# else's broker would fail this test for nothing.
for try in 1 2 3 4 5; do
  port=$(( 20000 + RANDOM % 20000 ))
  endpoint=tcp://127.0.0.1:$port
  "$broker" --endpoint "$endpoint" --policy '' --services '' --log-level info 2>"$log/broker" &
  broker_pid=$!
  for _ in $(seq 100); do
    grep -q 'ready: listening' "$log/broker" && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.05
  done
  grep -q 'ready: listening' "$log/broker" && break
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=
done
[ -n "$broker_pid" ] || fail "the broker did not start"
"$examples/echo_service" "$endpoint" >"$log/echo" 2>&1 &
echo_pid=$!
for _ in $(seq 50); do grep -q ready "$log/echo" && break; sleep 0.1; done
out=$("$examples/test_client" "$endpoint" 2>&1) || fail "test_client: $out"
echo "$out"
grep -q '"hello":"world"' <<<"$out" || fail "no echoed payload"
grep -q 'request echo' "$log/echo" || { echo "FAIL: echo_service did not see the request"; exit 1; }
echo "C examples: 1 passed, 0 failed"
