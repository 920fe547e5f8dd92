#!/usr/bin/env bash
# The C examples against the real broker: examples/c/echo_service serves,
# examples/c/test_client asks and must print the echoed payload.
# Usage: run_c_examples.sh BROKER EXAMPLES_DIR
set -euo pipefail
broker=$1 examples=$2
port=$(( 20000 + RANDOM % 20000 ))
endpoint=tcp://127.0.0.1:$port
log=$(mktemp -d)
trap 'kill $echo_pid $broker_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log"' EXIT
"$broker" --endpoint "$endpoint" --policy '' --services '' --log-level warn 2>"$log/broker" &
broker_pid=$!
sleep 0.3
"$examples/echo_service" "$endpoint" >"$log/echo" 2>&1 &
echo_pid=$!
for _ in $(seq 50); do grep -q ready "$log/echo" && break; sleep 0.1; done
out=$("$examples/test_client" "$endpoint")
echo "$out"
grep -q '"hello":"world"' <<<"$out" || { echo "FAIL: no echoed payload"; cat "$log/echo" "$log/broker"; exit 1; }
grep -q 'request echo' "$log/echo" || { echo "FAIL: echo_service did not see the request"; exit 1; }
echo "C examples: 1 passed, 0 failed"
