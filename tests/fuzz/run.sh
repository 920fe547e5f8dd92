#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of tests/fuzz/ (docs/fuzzing.md).
#
#   tests/fuzz/run.sh build            compile the fuzzers with clang into $FUZZ_OUT
#   tests/fuzz/run.sh short            build, then each target for $FUZZ_SECONDS
#                                      (default 20) from the seed corpus: the CI run
#   tests/fuzz/run.sh long [SECONDS] [TARGET...]
#                                      build, then each target for SECONDS
#                                      (default 600), one after another, keeping
#                                      what it finds in tests/fuzz/corpus-run/TARGET
#   tests/fuzz/run.sh repro TARGET FILE...
#                                      build, then run TARGET once on each FILE
#                                      (a crash-* reproducer) and show the report
#
# Environment:
#   FUZZ_OUT      where binaries, work corpora and artifacts go
#                 (default build/fuzz in the repository)
#   FUZZ_SECONDS  seconds per target for `short` (default 20; 0 = skip the run)
#   CLANG         the compiler (default: clang-14, else clang)
#   FUZZ_JOBS     parallel fuzzing processes per target for `long` (default 1)
#
# Exit status: 0 clean; 1 a fuzzer found a crash, leak or timeout, or a
# target did not build (99 from `repro` on a crash); 77 when clang or
# libFuzzer is missing (CTest reports SKIPPED; install clang-14
# libfuzzer-14-dev libclang-rt-14-dev on Debian 12). libFuzzer's own crash
# code, 77 by default too, is moved to 99 so the two never mix.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SRC="$ROOT/src"
OUT="${FUZZ_OUT:-$ROOT/build/fuzz}"
SKIP=77

TARGETS=(fuzz_json_scan fuzz_envelope fuzz_frames fuzz_patterns fuzz_lua_boundary fuzz_lua_json)

# The sources under test each target is compiled with (instrumented).
sources_of() {
    case "$1" in
    fuzz_json_scan) echo "json_scan.c" ;;
    fuzz_envelope)  echo "json_scan.c envelope.c names.c errors.c reply.c msg_writer.c" ;;
    fuzz_frames)    echo "json_scan.c envelope.c names.c errors.c wire.c" ;;
    fuzz_patterns)  echo "pattern_match.c" ;;
    fuzz_lua_json) echo "lua_json.c luamsg.c sandbox.c pattern_match.c json_scan.c envelope.c names.c errors.c log.c" ;;
    fuzz_lua_boundary) echo "sandbox.c policy.c policy_cache.c lua_code.c luamsg.c lua_json.c pattern_match.c json_scan.c envelope.c names.c errors.c log.c registry.c keyed_hash.c sha256.c state.c reply.c" ;;
    *) echo "unknown target $1" >&2; return 1 ;;
    esac
}
corpus_of() {
    case "$1" in
    fuzz_frames) echo "$HERE/corpus/frames" ;;
    fuzz_patterns) echo "$HERE/corpus/patterns" ;;
    fuzz_lua_boundary) echo "$HERE/corpus/lua" ;;
    fuzz_lua_json) echo "$HERE/corpus/json" ;;
    *)           echo "$HERE/corpus/envelope" ;;
    esac
}

dict_of() {
    case "$1" in
    fuzz_patterns) echo "$HERE/patterns.dict" ;;
    *)             echo "$HERE/envelope.dict" ;;
    esac
}

find_clang() {
    if [ -n "${CLANG:-}" ]; then
        command -v "$CLANG" && return 0
        return 1
    fi
    command -v clang-14 || command -v clang || return 1
}

# Exits 77 (skip) unless clang can link a libFuzzer target with ASan+UBSan.
require_toolchain() {
    if ! CC="$(find_clang)"; then
        echo "SKIP: no clang (install clang-14 libfuzzer-14-dev libclang-rt-14-dev)" >&2
        exit $SKIP
    fi
    mkdir -p "$OUT"
    local probe="$OUT/.probe"
    printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){return 0;}\n' >"$probe.c"
    if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>"$probe.log"; then
        echo "SKIP: $CC cannot link -fsanitize=fuzzer,address,undefined" \
             "(install libfuzzer-14-dev libclang-rt-14-dev):" >&2
        sed 's/^/  /' "$probe.log" >&2
        exit $SKIP
    fi
    rm -f "$probe" "$probe.c" "$probe.log"
    if ! pkg-config --exists libzmq libcjson uuid lua5.4 libsodium; then
        echo "SKIP: pkg-config cannot find libzmq, libcjson, uuid or lua5.4 (run make deps)" >&2
        exit $SKIP
    fi
}

# The static lua-cjson the broker links (lua-cjson-dev), as CMake finds it.
find_lua_cjson() {
    local dir
    for dir in $(gcc -print-multiarch 2>/dev/null | sed 's|^|/usr/lib/|') /usr/lib/x86_64-linux-gnu /usr/lib /usr/local/lib; do
        if [ -f "$dir/liblua5.4-cjson.a" ]; then
            echo "$dir/liblua5.4-cjson.a"
            return 0
        fi
    done
    echo "-llua5.4-cjson"
}

build() {
    require_toolchain
    local cflags libs t
    cflags="-std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
            -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration
            -I$SRC $(pkg-config --cflags libzmq libcjson uuid)"
    libs="$(pkg-config --libs libzmq libcjson uuid libsodium sqlite3 libsystemd) -lpthread -lm"
    # fuzz_envelope also reads each message with lua-cjson, as policies do;
    # fuzz_lua_boundary runs policies
    local lua_cflags lua_libs
    lua_cflags="$(pkg-config --cflags lua5.4)"
    lua_libs="$(find_lua_cjson) $(pkg-config --libs lua5.4)"
    echo "fuzz: building with $CC into $OUT"
    for t in "${TARGETS[@]}"; do
        local srcs=() s
        for s in $(sources_of "$t"); do srcs+=("$SRC/$s"); done
        # shellcheck disable=SC2086
        if [ "$t" = fuzz_envelope ] || [ "$t" = fuzz_patterns ] || [ "$t" = fuzz_lua_boundary ] ||
           [ "$t" = fuzz_lua_json ]; then
            "$CC" $cflags $lua_cflags "$HERE/$t.c" "${srcs[@]}" -o "$OUT/$t.new" $libs $lua_libs
        else
            "$CC" $cflags "$HERE/$t.c" "${srcs[@]}" -o "$OUT/$t.new" $libs
        fi
        mv "$OUT/$t.new" "$OUT/$t"
    done
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# run TARGET SECONDS WORKDIR [extra libFuzzer flags]
run_one() {
    local t="$1" secs="$2" work="$3"; shift 3
    mkdir -p "$work" "$OUT/artifacts"
    echo "fuzz: $t for ${secs}s (corpus $work + $(corpus_of "$t"))"
    "$OUT/$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=8192 \
        -dict="$(dict_of "$t")" -artifact_prefix="$OUT/artifacts/$t-" \
        -error_exitcode=99 -print_final_stats=1 "$@" "$work" "$(corpus_of "$t")"
}

cmd="${1:-short}"
shift || true
case "$cmd" in
build)
    build
    ;;
short)
    secs="${FUZZ_SECONDS:-20}"
    build
    if [ "$secs" = 0 ]; then
        echo "fuzz: FUZZ_SECONDS=0, built only"
        exit 0
    fi
    failed=()
    for t in "${TARGETS[@]}"; do
        # a fresh work corpus each time: the CI run starts from the seeds
        rm -rf "$OUT/work/$t"
        if ! run_one "$t" "$secs" "$OUT/work/$t" >"$OUT/$t.log" 2>&1; then
            failed+=("$t")
            echo "fuzz: $t FAILED; its log ($OUT/$t.log) ends:" >&2
            tail -n 60 "$OUT/$t.log" >&2
        else
            grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done' "$OUT/$t.log" | sed "s/^/  $t: /"
        fi
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "fuzz: ${#failed[@]} of ${#TARGETS[@]} targets failed: ${failed[*]}" \
             "(reproducers: $OUT/artifacts/)" >&2
        echo "fuzz: $((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
        exit 1
    fi
    echo "fuzz: ${#TARGETS[@]} passed, 0 failed"
    ;;
long)
    secs="${1:-600}"
    shift || true
    [ "$#" -gt 0 ] && TARGETS=("$@")
    build
    status=0
    for t in "${TARGETS[@]}"; do
        work="$HERE/corpus-run/$t"
        jobs="${FUZZ_JOBS:-1}"
        extra=()
        [ "$jobs" -gt 1 ] && extra=(-fork="$jobs")
        set +e
        run_one "$t" "$secs" "$work" "${extra[@]}" 2>&1 | tee "$OUT/$t.long.log" |
            grep -E --line-buffered '^fuzz:|pulse|DONE|ERROR|Done|==[0-9]+==|runtime error|invariant'
        rc="${PIPESTATUS[0]}"
        set -e
        if [ "$rc" -ne 0 ]; then
            status=1
            echo "fuzz: $t FAILED (log $OUT/$t.long.log, reproducers $OUT/artifacts/)" >&2
        fi
    done
    exit $status
    ;;
repro)
    t="${1:?usage: run.sh repro TARGET FILE...}"
    shift
    build
    "$OUT/$t" -error_exitcode=99 "$@"
    ;;
*)
    echo "usage: $0 build|short|long [SECONDS] [TARGET...]|repro TARGET FILE..." >&2
    exit 2
    ;;
esac
