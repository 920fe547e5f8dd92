#!/usr/bin/env bash
# Runs the conformance suite (docs/protocol.md, section 17) against our own
# broker binary: starts it on a free loopback port with no policy and no
# services, runs tests/conformance/run.py against it, stops it; then runs the
# graceful-stop test (D5) against a second broker and checks it exits 0.
#
#   tests/conformance/run_local.sh build/smartshop-broker [run.py options...]
#
# Extra options go to run.py (e.g. --time-scale 5 under sanitizers, -k T4).
# Exit status: run.py's (0 all passed), or 1 when the broker would not
# start, died during the run, or did not stop cleanly.
set -u

if [ $# -lt 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 BROKER_BINARY [run.py options...]" >&2
    exit 2
fi
BIN=$1
shift
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
TMP=$(mktemp -d)
BROKER_PID=

cleanup() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -KILL "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker LOGFILE: sets PORT and BROKER_PID; fails if it will not start.
start_broker() {
    local log=$1 try i
    for try in 1 2 3; do
        PORT=$(free_port)
        "$BIN" --endpoint "tcp://127.0.0.1:$PORT" --log-level warn --policy '' --services '' 2>"$log" &
        BROKER_PID=$!
        for i in $(seq 1 100); do       # up to 10 s
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                break
            fi
            if grep -qi ready "$log" || (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            kill -KILL "$BROKER_PID" 2>/dev/null
        fi
        wait "$BROKER_PID" 2>/dev/null
        BROKER_PID=
        echo "run_local: broker did not start on port $PORT (try $try):" >&2
        sed 's/^/  | /' "$log" >&2
    done
    return 1
}

status=0

# Phase 1: the whole suite (D5 skips without --broker-pid).
start_broker "$TMP/broker1.log" || exit 1
echo "run_local: $BIN on tcp://127.0.0.1:$PORT (pid $BROKER_PID)"
"$PY" "$HERE/run.py" --endpoint "tcp://127.0.0.1:$PORT" "$@"
status=$?
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    wait "$BROKER_PID"
    echo "run_local: the broker died during the run (exit status $?); its log:" >&2
    sed 's/^/  | /' "$TMP/broker1.log" >&2
    BROKER_PID=
    exit 1
fi
kill -TERM "$BROKER_PID"
wait "$BROKER_PID"
BROKER_PID=
if [ -s "$TMP/broker1.log" ] && [ "$status" -ne 0 ]; then
    echo "run_local: broker log:" >&2
    sed 's/^/  | /' "$TMP/broker1.log" >&2
fi

# Phase 2: graceful stop (D5) against a fresh broker, which the test SIGTERMs.
case " $* " in
    *" -k "*) exit "$status" ;;    # a selection was asked for: phase 1 ran it
esac
start_broker "$TMP/broker2.log" || exit 1
"$PY" "$HERE/run.py" --endpoint "tcp://127.0.0.1:$PORT" --broker-pid "$BROKER_PID" -k D5 "$@"
d5=$?
for i in $(seq 1 100); do              # the broker should be gone within the grace period
    kill -0 "$BROKER_PID" 2>/dev/null || break
    [ "$(ps -o stat= -p "$BROKER_PID" 2>/dev/null | cut -c1)" = Z ] && break
    sleep 0.1
done
if kill -0 "$BROKER_PID" 2>/dev/null && [ "$(ps -o stat= -p "$BROKER_PID" | cut -c1)" != Z ]; then
    echo "run_local: D5: the broker did not exit within 10 s of SIGTERM" >&2
    d5=1
else
    wait "$BROKER_PID"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "run_local: D5: the broker exited with status $rc after SIGTERM (want 0)" >&2
        d5=1
    fi
fi
BROKER_PID=
if [ "$d5" -ne 0 ]; then
    sed 's/^/  | /' "$TMP/broker2.log" >&2
    [ "$status" -eq 0 ] && status=$d5
fi
exit "$status"
