#!/usr/bin/env bash
# The installed client library, as a newcomer uses it (issue 5, "Done when").
#
# Installs libsmartshop from BUILD_DIR into a temporary prefix
# (cmake --install BUILD_DIR --prefix TMP), then builds the C examples from
# scratch, outside the source tree, twice:
#   1. cc ... $(pkg-config --cflags --libs smartshop), PKG_CONFIG_PATH=TMP/...
#   2. a tiny CMake project: find_package(smartshop CONFIG REQUIRED) and
#      target_link_libraries(... smartshop::smartshop), CMAKE_PREFIX_PATH=TMP
# and also every C program in docs/c-api.md marked
# `<!-- test_install: compile NAME.c -->` (with pkg-config). Then runs each
# echo service and test client against a real broker (BUILD_DIR/smartshop-broker
# on a free port, no policy, no Lua services) with LD_LIBRARY_PATH at the
# installed lib, and checks the client prints the echoed payload.
#
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
# Prints "install: N passed, N failed"; exits non-zero on any failure.
# Leaves nothing behind: the temporary prefix and builds are removed, the
# processes it started are stopped, and BUILD_DIR/install_manifest.txt (which
# cmake --install writes) is put back as it was, even on failure or a signal.
set -u

if [ $# -ne 2 ]; then
    echo "usage: test_install.sh BUILD_DIR SOURCE_DIR" >&2
    exit 2
fi
build=$(cd "$1" && pwd) || exit 2
src=$(cd "$2" && pwd) || exit 2

pass=0 fail=0
pids=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/smartshop-install.XXXXXX") || exit 2
prefix=$tmp/prefix
manifest=$build/install_manifest.txt
if [ -e "$manifest" ]; then
    cp -p "$manifest" "$tmp/manifest.saved"
fi

# shellcheck disable=SC2317  # called by the trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    pids=()
    if [ -e "$tmp/manifest.saved" ]; then
        cp -p "$tmp/manifest.saved" "$manifest"
    else
        rm -f "$manifest"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() {
    echo "ok: $1"
    pass=$((pass + 1))
}

# bad WHAT [LOGFILE...]: a failure, with the logs that explain it
bad() {
    local what=$1 f
    shift
    echo "FAIL: $what"
    for f in "$@"; do
        [ -s "$f" ] && sed 's/^/    | /' "$f"
    done
    fail=$((fail + 1))
}

finish() {
    echo "install: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

# stop PID: stops one process this script started and forgets it
stop() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for p in "${pids[@]}"; do
        [ "$p" != "$pid" ] && keep+=("$p")
    done
    pids=("${keep[@]+"${keep[@]}"}")
}

# --- 1. install into the temporary prefix ---

if cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
    ok "cmake --install $build --prefix <tmp>"
else
    bad "cmake --install $build --prefix <tmp>" "$tmp/install.log"
    finish
fi

pc=$(find "$prefix" -name smartshop.pc -path '*/pkgconfig/*' | head -n 1)
config=$(find "$prefix" -name smartshopConfig.cmake | head -n 1)
lib=$(find "$prefix" -name 'libsmartshop.so.0' | head -n 1)
missing=""
[ -f "$prefix/include/smartshop.h" ] || missing="$missing include/smartshop.h"
[ -n "$lib" ] || missing="$missing libsmartshop.so.0"
[ -n "$(find "$prefix" -name libsmartshop.so | head -n 1)" ] || missing="$missing libsmartshop.so"
[ -n "$pc" ] || missing="$missing pkgconfig/smartshop.pc"
[ -n "$config" ] || missing="$missing cmake/smartshop/smartshopConfig.cmake"
if [ -z "$missing" ]; then
    ok "installed: header, library, smartshop.pc, smartshopConfig.cmake"
else
    bad "not installed:$missing" "$tmp/install.log"
    finish
fi
libdir=$(dirname "$lib")
pcdir=$(dirname "$pc")

# The library exports every function its header declares.
nm -D --defined-only "$lib" 2>/dev/null | awk '{print $NF}' | sort -u >"$tmp/exported"
sed -n '/^[A-Za-z]/s/^[^(]*[ *]\(ss_[a-z_]*\)(.*/\1/p' "$prefix/include/smartshop.h" \
    | sort -u >"$tmp/declared"
comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/unexported"
if [ ! -s "$tmp/declared" ]; then
    bad "found no function declarations in the installed smartshop.h"
elif [ -s "$tmp/unexported" ]; then
    echo "declared in smartshop.h but not exported by $(basename "$lib"):" >"$tmp/unexported.msg"
    cat "$tmp/unexported" >>"$tmp/unexported.msg"
    bad "every function of smartshop.h is exported" "$tmp/unexported.msg"
else
    ok "every function of smartshop.h ($(wc -l <"$tmp/declared")) is exported"
fi

# --- 2. pkg-config ---

mkdir -p "$tmp/pc"
pkgconf() { PKG_CONFIG_PATH=$pcdir pkg-config "$@"; }
if ! flags=$(pkgconf --cflags --libs smartshop 2>"$tmp/pc/pkg-config.log"); then
    bad "pkg-config --cflags --libs smartshop" "$tmp/pc/pkg-config.log"
    flags=""
else
    # -I and -L must point into the prefix the package was installed to
    echo "pkg-config --cflags --libs smartshop: $flags" >"$tmp/pc/flags.log"
    # (compared as real paths: a relocatable .pc may say ${pcfiledir}/../..)
    want_inc=$(realpath -m "$prefix/include") want_lib=$(realpath -m "$libdir")
    has_inc=0 has_lib=0
    for word in $flags; do
        case $word in
        -I*) [ "$(realpath -m "${word#-I}")" = "$want_inc" ] && has_inc=1 ;;
        -L*) [ "$(realpath -m "${word#-L}")" = "$want_lib" ] && has_lib=1 ;;
        esac
    done
    if [ "$has_inc" = 1 ] && [ "$has_lib" = 1 ]; then
        ok "pkg-config flags point into the install prefix"
    else
        echo "expected -I$prefix/include and -L$libdir" >>"$tmp/pc/flags.log"
        bad "pkg-config flags point into the install prefix" "$tmp/pc/flags.log"
    fi
fi

# compile_pc NAME SOURCE OUTDIR LABEL: cc with pkg-config's flags, outside the tree
compile_pc() {
    local name=$1 source=$2 out=$3 label=$4
    # shellcheck disable=SC2086  # the flags are words
    if ${CC:-cc} -Wall -o "$out/$name" "$source" $flags >"$out/$name.cc.log" 2>&1; then
        ok "cc $label \$(pkg-config --cflags --libs smartshop)"
        [ -s "$out/$name.cc.log" ] && sed 's/^/    | /' "$out/$name.cc.log"
        return 0
    fi
    bad "cc $label \$(pkg-config --cflags --libs smartshop)" "$out/$name.cc.log"
    return 1
}

for name in echo_service test_client; do
    cp "$src/examples/c/$name.c" "$tmp/pc/"
    compile_pc "$name" "$tmp/pc/$name.c" "$tmp/pc" "examples/c/$name.c"
done

# --- 3. CMake: find_package(smartshop CONFIG REQUIRED) ---

mkdir -p "$tmp/cm"
cp "$src/examples/c/echo_service.c" "$src/examples/c/test_client.c" "$tmp/cm/"
cat >"$tmp/cm/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(smartshop_consumer LANGUAGES C)
find_package(smartshop CONFIG REQUIRED)
message(STATUS "smartshop_DIR=${smartshop_DIR} smartshop_VERSION=${smartshop_VERSION}")
foreach(name echo_service test_client)
  add_executable(${name} ${name}.c)
  target_link_libraries(${name} PRIVATE smartshop::smartshop)
endforeach()
EOF
if cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$tmp/cm/configure.log" 2>&1; then
    ok "cmake configure with find_package(smartshop CONFIG REQUIRED)"
    if grep -q "smartshop_DIR=$prefix/" "$tmp/cm/configure.log"; then
        ok "find_package found the package in the install prefix"
    else
        bad "find_package found the package in the install prefix" "$tmp/cm/configure.log"
    fi
    if cmake --build "$tmp/cm/build" >"$tmp/cm/build.log" 2>&1; then
        ok "cmake --build: echo_service, test_client linked to smartshop::smartshop"
    else
        bad "cmake --build: echo_service, test_client linked to smartshop::smartshop" "$tmp/cm/build.log"
    fi
else
    bad "cmake configure with find_package(smartshop CONFIG REQUIRED)" "$tmp/cm/configure.log"
fi

# --- 4. the programs of docs/c-api.md, with pkg-config ---

mkdir -p "$tmp/doc"
doc=$src/docs/c-api.md
if [ -f "$doc" ]; then
    # each ```c block after a `<!-- test_install: compile NAME.c -->` line
    awk -v dir="$tmp/doc" '
        /<!-- test_install: compile [A-Za-z0-9_]+\.c -->/ {
            match($0, /compile [A-Za-z0-9_]+\.c/)
            name = substr($0, RSTART + 8, RLENGTH - 8); want = 1; next }
        want && /^```c[ \t]*$/ { out = dir "/" name; printf "" > out; want = 0; next }
        out != "" && /^```[ \t]*$/ { close(out); print name; out = ""; next }
        out != "" { print > out }
    ' "$doc" >"$tmp/doc/programs"
    if [ -s "$tmp/doc/programs" ]; then
        ok "docs/c-api.md: $(wc -l <"$tmp/doc/programs") program(s) to build: $(tr '\n' ' ' <"$tmp/doc/programs")"
        while read -r file; do
            compile_pc "${file%.c}" "$tmp/doc/$file" "$tmp/doc" "docs/c-api.md:$file"
        done <"$tmp/doc/programs"
    else
        bad "docs/c-api.md has programs marked <!-- test_install: compile NAME.c -->"
    fi
else
    bad "docs/c-api.md exists"
fi

# --- 5. run them against a real broker ---

broker=$build/smartshop-broker
# what this script starts also ends by itself, should the script be SIGKILLed
max_life=300
port_in_use() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
broker_pid=""
if [ ! -x "$broker" ]; then
    bad "broker $broker exists"
else
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        endpoint=tcp://127.0.0.1:$port
        timeout -k 5 "$max_life" "$broker" --endpoint "$endpoint" --policy '' --services '' \
            --log-level warn >"$tmp/broker.log" 2>&1 &
        broker_pid=$!
        pids+=("$broker_pid")
        for _ in $(seq 50); do
            port_in_use "$port" && break
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$broker_pid" 2>/dev/null && port_in_use "$port"; then
            break
        fi
        stop "$broker_pid"
        broker_pid=""
    done
    if [ -n "$broker_pid" ]; then
        ok "broker listening on $endpoint"
    else
        bad "broker starts on a free port" "$tmp/broker.log"
    fi
fi

# run_pair LABEL SERVICE CLIENT: the service answers, the client prints the echo
run_pair() {
    local label=$1 service=$2 client=$3 log=$tmp/run.$RANDOM svc_pid out
    if [ ! -x "$service" ] || [ ! -x "$client" ]; then
        bad "$label: echo service and test client run (not built)"
        return
    fi
    mkdir -p "$log"
    # each must load the installed library, not a build tree's
    for bin in "$service" "$client"; do
        if ! LD_LIBRARY_PATH=$libdir ldd "$bin" 2>&1 | grep -q "libsmartshop.so.0 => $libdir/"; then
            LD_LIBRARY_PATH=$libdir ldd "$bin" >"$log/ldd" 2>&1
            bad "$label: $(basename "$bin") loads libsmartshop from the install prefix" "$log/ldd"
            return
        fi
    done
    LD_LIBRARY_PATH=$libdir timeout -k 5 "$max_life" "$service" "$endpoint" >"$log/service" 2>&1 &
    svc_pid=$!
    pids+=("$svc_pid")
    for _ in $(seq 100); do
        grep -q ready "$log/service" && break
        kill -0 "$svc_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q ready "$log/service"; then
        bad "$label: $(basename "$service") registers and says ready" "$log/service" "$tmp/broker.log"
        stop "$svc_pid"
        return
    fi
    out=$(LD_LIBRARY_PATH=$libdir timeout 20 "$client" "$endpoint" 2>&1)
    echo "$out" >"$log/client"
    if grep -q '"hello":"world"' <<<"$out" && grep -q 'request echo' "$log/service"; then
        ok "$label: $(basename "$client") got the echo from $(basename "$service"): $(grep -m1 '"hello"' <<<"$out")"
    else
        bad "$label: $(basename "$client") prints the echoed payload" \
            "$log/client" "$log/service" "$tmp/broker.log"
    fi
    stop "$svc_pid"
}

if [ -n "$broker_pid" ]; then
    run_pair "pkg-config build" "$tmp/pc/echo_service" "$tmp/pc/test_client"
    run_pair "CMake build" "$tmp/cm/build/echo_service" "$tmp/cm/build/test_client"
    if [ -s "$tmp/doc/programs" ]; then
        # every doc service against the doc's client
        doc_client=""
        grep -qx 'test_client.c' "$tmp/doc/programs" && doc_client=$tmp/doc/test_client
        while read -r file; do
            case $file in
            test_client.c) ;;
            *service*.c)
                if [ -n "$doc_client" ]; then
                    run_pair "docs/c-api.md" "$tmp/doc/${file%.c}" "$doc_client"
                else
                    bad "docs/c-api.md has a test_client.c to run against $file"
                fi
                ;;
            esac
        done <"$tmp/doc/programs"
    fi
    if kill -0 "$broker_pid" 2>/dev/null; then
        ok "broker still running after the runs"
    else
        bad "broker still running after the runs" "$tmp/broker.log"
    fi
fi

finish
