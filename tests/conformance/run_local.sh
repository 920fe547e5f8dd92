#!/usr/bin/env bash
# Runs the conformance suite (docs/protocol.md, section 17) against our own
# broker binary, in phases, each against a fresh broker on a free loopback
# port, started with the configuration the phase checks:
#
#   default  no policy, no services, default limits: every test that needs
#            no profile (the multi-second ones and D5 skip here)
#   slow     the multi-second L3 tests (run.py --slow), on a broker of its own
#            while the default phase runs
#   limits   --max-peers 8 --max-names-per-peer 3 --max-services 8   (L5)
#   curve    CURVE: a broker key pair and client pairs alice, bob, admin made
#            by --keygen in a temporary directory, the suite's allow list (N3)
#   policy   --policy tests/conformance/fixtures/policy.lua           (N4, P1)
#   lua      --services tests/conformance/fixtures/services           (T8)
#   D5       graceful stop: the test SIGTERMs the broker, which must exit 0
#
#   tests/conformance/run_local.sh build/smartshop-broker [run.py options...]
#
# Extra options go to run.py in every phase (e.g. --time-scale 5 under
# sanitizers). With -k, a profile phase runs only if it has a test selected,
# and the slow and D5 phases do not run (add --slow to run the slow tests in
# the default phase). With --slow the default phase runs the slow tests.
#
# Prints one summary line per phase, then "conformance: N passed, N failed"
# (tests, over all phases; a phase whose broker would not start, died, or
# did not stop cleanly counts one failure more). Exit status 0 when every
# phase passed, 1 otherwise, 2 on bad usage.
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
SLOW_JOB=

cleanup() {
    local f pid
    if [ -n "$SLOW_JOB" ] && kill -0 "$SLOW_JOB" 2>/dev/null; then
        kill -TERM "$SLOW_JOB" 2>/dev/null
        wait "$SLOW_JOB" 2>/dev/null
    fi
    for f in "$TMP"/*.pid; do            # brokers of phases that did not finish
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

indent() { sed 's/^/  | /' "$1" >&2; }

# start_broker NAME BROKER_FLAGS...: sets PORT and BROKER_PID (also written
# to $TMP/NAME.pid for cleanup); fails if the broker will not start.
start_broker() {
    local name=$1 log=$TMP/$1.log try i
    shift
    for try in 1 2 3; do
        PORT=$(free_port)
        "$BIN" --endpoint "tcp://127.0.0.1:$PORT" --log-level warn "$@" 2>"$log" &
        BROKER_PID=$!
        echo "$BROKER_PID" >"$TMP/$name.pid"
        for i in $(seq 1 100); do       # up to 10 s
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                break
            fi
            if grep -qsi ready "$log" || (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            kill -KILL "$BROKER_PID" 2>/dev/null
        fi
        wait "$BROKER_PID" 2>/dev/null
        rm -f "$TMP/$name.pid"
        BROKER_PID=
        echo "run_local: $name: the broker did not start on port $PORT (try $try):" >&2
        indent "$log"
    done
    return 1
}

# run_phase NAME STOP BROKER_FLAGS... -- RUN.PY_OPTIONS...
# STOP is "stop" when the test stops the broker itself (D5): then the broker
# must exit 0 within 10 s; otherwise it must still be alive after the run.
# Writes $TMP/NAME.phase: "NAME<TAB>milliseconds<TAB>problem" (problem empty if
# none), and run.py's counts to $TMP/NAME.json.
run_phase() {
    local name=$1 stop=$2 flags=() t0 rc problem= i shown
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        flags+=("$1")
        shift
    done
    shift
    t0=$(now_ms)
    if ! start_broker "$name" "${flags[@]}"; then
        printf '%s\t%s\t%s\n' "$name" 0 "the broker did not start" >"$TMP/$name.phase"
        return 1
    fi
    printf -v shown ' %q' "${flags[@]}"
    echo "run_local: $name: $BIN on tcp://127.0.0.1:$PORT (pid $BROKER_PID):$shown"
    if [ "$stop" = stop ]; then
        "$PY" "$HERE/run.py" --endpoint "tcp://127.0.0.1:$PORT" --results "$TMP/$name.json" \
            --broker-pid "$BROKER_PID" "$@"
        rc=$?
        for i in $(seq 1 100); do        # gone within the grace period
            kill -0 "$BROKER_PID" 2>/dev/null || break
            [ "$(ps -o stat= -p "$BROKER_PID" 2>/dev/null | cut -c1)" = Z ] && break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null && [ "$(ps -o stat= -p "$BROKER_PID" | cut -c1)" != Z ]; then
            problem="the broker did not exit within 10 s of SIGTERM"
        else
            wait "$BROKER_PID"
            i=$?
            [ "$i" -ne 0 ] && problem="the broker exited with status $i after SIGTERM (want 0)"
        fi
    else
        "$PY" "$HERE/run.py" --endpoint "tcp://127.0.0.1:$PORT" --results "$TMP/$name.json" "$@"
        rc=$?
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID"
            problem="the broker died during the run (exit status $?)"
        else
            kill -TERM "$BROKER_PID"
            wait "$BROKER_PID"
        fi
    fi
    rm -f "$TMP/$name.pid"
    if [ -z "$problem" ] && [ "$rc" -ne 0 ] && [ ! -s "$TMP/$name.json" ]; then
        problem="run.py exited with status $rc"
    fi
    if [ -n "$problem" ]; then
        echo "run_local: $name: $problem" >&2
    fi
    if { [ -n "$problem" ] || [ "$rc" -ne 0 ]; } && [ -s "$TMP/$name.log" ]; then
        echo "run_local: $name: broker log:" >&2
        indent "$TMP/$name.log"
    fi
    printf '%s\t%s\t%s\n' "$name" $(( $(now_ms) - t0 )) "$problem" >"$TMP/$name.phase"
    [ -z "$problem" ] && [ "$rc" -eq 0 ]
}

# selected NAME RUN.PY_OPTIONS...: whether run.py would run a test (no broker)
selected() {
    [ -n "$("$PY" "$HERE/run.py" --list "$@" 2>/dev/null)" ]
}

# curve_setup: key pairs and the allow list of the curve profile, in $TMP/curve
curve_setup() {
    local dir=$TMP/curve who
    mkdir -p "$dir/clients" || return 1
    "$BIN" --keygen "$dir/broker" >/dev/null || return 1
    for who in alice bob admin; do
        "$BIN" --keygen "$dir/clients/$who" >/dev/null || return 1
    done
    key() { awk '$1 != "#" && NF { print $1; exit }' "$1"; }
    {
        echo "# the conformance suite's allow list (docs/protocol.md section 17)"
        echo "$(key "$dir/clients/alice.pub") ct-alice-* ct-shared-*"
        echo "$(key "$dir/clients/bob.pub") ct-bob-* ct-shared-*"
        echo "$(key "$dir/clients/admin.pub") ct-admin-* @admin   # operator actions"
    } >"$dir/allow"
}

has_k=no
has_slow=no
for a in "$@"; do
    case $a in
        -k*) has_k=yes ;;
        --slow) has_slow=yes ;;
    esac
done

PLAIN=(--policy '' --services '')
LIMITS=(--max-peers 8 --max-names-per-peer 3 --max-services 8)
PHASES=(default)
status=0

# slow, in the background on its own broker; its output is shown afterwards
if [ "$has_k" = no ] && [ "$has_slow" = no ]; then
    (run_phase slow keep "${PLAIN[@]}" -- --slow -k L3 "$@") >"$TMP/slow.out" 2>&1 &
    SLOW_JOB=$!
fi

run_phase default keep "${PLAIN[@]}" -- "$@" || status=1

if [ -n "$SLOW_JOB" ]; then
    wait "$SLOW_JOB" || status=1
    SLOW_JOB=
    cat "$TMP/slow.out"
    PHASES+=(slow)
fi

for profile in limits curve policy lua; do
    case $profile in
        limits) flags=("${PLAIN[@]}" "${LIMITS[@]}"); opts=("${LIMITS[@]}") ;;
        curve)  flags=("${PLAIN[@]}" --curve-secret-key "$TMP/curve/broker.key"
                       --curve-allow "$TMP/curve/allow")
                opts=(--curve-server-key "$TMP/curve/broker.pub" --curve-client-keys "$TMP/curve/clients") ;;
        policy) flags=(--policy "$HERE/fixtures/policy.lua" --services ''); opts=() ;;
        lua)    flags=(--policy '' --services "$HERE/fixtures/services"); opts=() ;;
    esac
    if [ "$has_k" = yes ] && ! selected --profile "$profile" "${opts[@]}" "$@"; then
        continue
    fi
    PHASES+=("$profile")
    if [ "$profile" = curve ] && ! curve_setup; then
        echo "run_local: curve: could not make the keys with $BIN --keygen" >&2
        printf '%s\t0\t%s\n' curve "--keygen failed" >"$TMP/curve.phase"
        status=1
        continue
    fi
    run_phase "$profile" keep "${flags[@]}" -- --profile "$profile" "${opts[@]}" "$@" || status=1
done

if [ "$has_k" = no ]; then
    PHASES+=(D5)
    run_phase D5 stop "${PLAIN[@]}" -- -k D5 "$@" || status=1
fi

"$PY" - "$TMP" "${PHASES[@]}" <<'EOF'
import json, os, sys
tmp, phases = sys.argv[1], sys.argv[2:]
passed = failed = 0
lines, ran, skipped = [], set(), {}
for name in phases:
    try:
        with open(os.path.join(tmp, name + ".phase")) as f:
            _, ms, problem = f.read().rstrip("\n").split("\t")
    except (OSError, ValueError):
        ms, problem = "0", "did not run"
    try:
        with open(os.path.join(tmp, name + ".json")) as f:
            c = json.load(f)
    except (OSError, ValueError):
        c = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    bad = c["failed"] + c["errors"] + (1 if problem else 0)
    passed, failed = passed + c["passed"], failed + bad
    ran.update(c.get("ran", []))
    skipped[name] = set(c.get("skipped_tests", []))
    lines.append([name, "run_local: phase %-7s %3d passed, %d failed, %d skipped (%.1f s)%s"
                  % (name + ":", c["passed"], bad, c["skipped"], int(ms) / 1000,
                     "; " + problem if problem else "")])
for line in lines:
    left = sorted(t.split(".")[-1] for t in skipped[line[0]] - ran)
    if skipped[line[0]]:
        line[1] += ("; not run in any phase: " + ", ".join(left) if left
                    else "; each skipped test ran in another phase")
    print(line[1])
print("conformance: %d passed, %d failed" % (passed, failed))
EOF
exit "$status"
