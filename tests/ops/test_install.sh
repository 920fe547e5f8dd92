#!/usr/bin/env bash
# test_install.sh: install_broker.sh into a temporary root (DESTDIR), its
# install by hand (without dpkg: what the Debian packages do), and check
# what lands; twice (idempotent); an edited config survives; --uninstall
# removes the rest, --purge everything. (The packages themselves:
# test_deb.sh.)
#
#   bash tests/ops/test_install.sh [BUILD_DIR]     (default: build/)
#
# Uses the existing build (--no-build); never touches the real system:
# useradd, userdel, systemctl and ldconfig are stubs on PATH that fail the
# test if the script calls them.
# shellcheck disable=SC2015  # "cond && ok ... || bad ...": ok always succeeds
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd) || exit 1
script=$src/install_broker.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/smartshop-ops-install.XXXXXX")
root=$tmp/root
pass=0 fail=0
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() {
    echo "FAIL: $1"
    shift
    local f
    for f in "$@"; do [ -s "$f" ] && sed 's/^/    | /' "$f"; done
    fail=$((fail + 1))
}
finish() {
    echo "ops.install: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

# stubs: the DESTDIR mode must only say what it would do
mkdir -p "$tmp/stubs"
for cmd in useradd userdel systemctl ldconfig; do
    printf '#!/bin/sh\necho "%s $*" >>"%s/called"\nexit 1\n' "$cmd" "$tmp" >"$tmp/stubs/$cmd"
    chmod +x "$tmp/stubs/$cmd"
done
run_script() { # run_script LOG ARGS...
    local log=$1
    shift
    PATH=$tmp/stubs:$PATH DESTDIR='' PREFIX='' BUILD='' bash "$script" "$@" >"$log" 2>&1
}

[ -x "$build/smartshop-broker" ] || { bad "built broker in $build"; finish; }
[ -x "$build/smartshop-ctl" ] || { bad "built smartshop-ctl in $build (add_subdirectory(ctl)?)"; finish; }

# --- help and usage ---
if bash "$script" --help >"$tmp/help" 2>&1 && grep -q -- --uninstall "$tmp/help" && grep -q -- --destdir "$tmp/help"; then
    ok "--help describes --destdir and --uninstall"
else
    bad "--help" "$tmp/help"
fi
bash "$script" --bogus >"$tmp/bogus" 2>&1
rc=$?
[ "$rc" = 2 ] && ok "an unknown option exits 2" || bad "an unknown option exits 2 (got $rc)" "$tmp/bogus"
run_script "$tmp/prefix.log" --destdir "$root" --no-build --build-dir "$build" --prefix /opt/elsewhere
rc=$?
if [ "$rc" != 0 ] && grep -q "configured for prefix" "$tmp/prefix.log" && [ ! -e "$root/opt" ]; then
    ok "--no-build with a prefix the build was not configured for: refused, nothing installed"
else
    bad "--no-build with another prefix is refused (rc $rc)" "$tmp/prefix.log"
fi

# --- 1. first install ---
if run_script "$tmp/install1.log" --destdir "$root" --no-build --build-dir "$build"; then
    ok "install_broker.sh --destdir <tmp> --no-build"
else
    bad "install_broker.sh --destdir <tmp> --no-build" "$tmp/install1.log"
    finish
fi
head -n 1 "$tmp/install1.log" | grep -q '^install_broker.sh: without dpkg (--prefix or --destdir given' &&
    ok "it says it installs without dpkg, and why" || bad "it says it installs without dpkg, and why" "$tmp/install1.log"

missing=""
for f in usr/local/bin/smartshop-broker usr/local/bin/smartshop-ctl; do
    [ -x "$root/$f" ] || missing="$missing $f"
done
for f in etc/smartshop/broker.lua etc/smartshop/policies/routing.lua usr/local/share/doc/smartshop-broker/operations.md \
    usr/local/share/bash-completion/completions/smartshop-ctl \
    etc/systemd/system/smartshop-broker.service usr/local/include/smartshop.h \
    usr/local/share/smartshop/install-manifest; do
    [ -f "$root/$f" ] || missing="$missing $f"
done
pc=$(find "$root/usr/local" -path '*/pkgconfig/smartshop.pc' | head -n 1)
[ -n "$pc" ] || missing="$missing pkgconfig/smartshop.pc"
[ -n "$(find "$root/usr/local" -name 'libsmartshop.so.0' | head -n 1)" ] || missing="$missing libsmartshop.so.0"
[ -n "$(find "$root/usr/local" -name smartshopConfig.cmake | head -n 1)" ] || missing="$missing smartshopConfig.cmake"
if [ -z "$missing" ]; then
    ok "landed: binaries, broker.lua, routing.lua, the unit, header, library, smartshop.pc, CMake package"
else
    bad "missing after install:$missing" "$tmp/install1.log"
fi

# the policy library and the bench: the installed bench loads the
# installed routing.lua with the installed lua/ (../share/smartshop/lua)
printf '{"type":"request","msg_id":"a","src":"web","dst":"orders","action":"list"}\n' >"$tmp/one.jsonl"
if [ -x "$root/usr/local/bin/smartshop-policy" ] &&
   [ -f "$root/usr/local/share/smartshop/lua/smartshop/rules/breaker.lua" ] &&
   (cd / && env -u SMARTSHOP_LUA_PATH "$root/usr/local/bin/smartshop-policy" \
        "$root/etc/smartshop/policies/routing.lua" "$tmp/one.jsonl") >"$tmp/bench.log" 2>&1 &&
   grep -q "^1: a: request web -> orders list: pass$" "$tmp/bench.log"; then
    ok "smartshop-policy and the Lua library installed; the bench runs the installed routing.lua"
else
    bad "smartshop-policy runs the installed routing.lua with the installed library" "$tmp/bench.log"
fi

# the policy in /etc, the demo services and example policies only as
# examples (as the package has them), byte for byte
doc=$root/usr/local/share/doc/smartshop-broker
diffs=""
cmp -s "$src/policies/routing.lua" "$root/etc/smartshop/policies/routing.lua" || diffs="$diffs routing.lua"
for f in "$src"/policies/examples/*.lua; do
    cmp -s "$f" "$doc/examples/policies/$(basename "$f")" || diffs="$diffs ${f#"$src"/}"
done
for f in echo.lua inventory.lua; do
    cmp -s "$src/services/$f" "$doc/examples/services/$f" || diffs="$diffs services/$f"
done
[ -z "$diffs" ] && ok "routing.lua in /etc/smartshop; example policies and demo services under doc/examples" ||
    bad "not copied or different:$diffs"
if [ -d "$root/etc/smartshop/services" ] && [ -z "$(ls -A "$root/etc/smartshop/services")" ]; then
    ok "/etc/smartshop/services is there and empty (no demo service goes live)"
else
    bad "/etc/smartshop/services is there and empty" "$tmp/install1.log"
fi
if command -v go-md2man >/dev/null; then
    for page in man8/smartshop-broker.8 man1/smartshop-ctl.1 man7/smartshop-lua.7; do
        [ -f "$root/usr/local/share/man/$page" ] && ok "man page $page" || bad "man page $page" "$tmp/install1.log"
    done
fi
cmp -s "$src/packaging/broker.lua" "$root/etc/smartshop/broker.lua" &&
    ok "broker.lua is packaging/broker.lua" || bad "broker.lua is packaging/broker.lua"

# the config and the unit agree with each other and with what landed
unit=$root/etc/systemd/system/smartshop-broker.service
grep -q '^ExecStart=/usr/local/bin/smartshop-broker --config /etc/smartshop/broker.lua$' "$unit" &&
    ok "the unit starts the installed broker with /etc/smartshop/broker.lua" ||
    bad "the unit's ExecStart" "$unit"
if grep -q 'policy = "/etc/smartshop/policies/routing.lua"' "$root/etc/smartshop/broker.lua" &&
    grep -q 'services = "/etc/smartshop/services"' "$root/etc/smartshop/broker.lua"; then
    ok "broker.lua names the installed policy and services"
else
    bad "broker.lua names the installed policy and services" "$root/etc/smartshop/broker.lua"
fi
# the installed config is one the installed broker accepts: a policy and
# services from the temporary root, on a free port, stopped at once
cfg=$tmp/check.lua
sed -e "s|/etc/smartshop|$root/etc/smartshop|g" -e 's|tcp://127.0.0.1:5555|tcp://127.0.0.1:0|' \
    "$root/etc/smartshop/broker.lua" >"$cfg"
timeout 5 "$root/usr/local/bin/smartshop-broker" --config "$cfg" --endpoint tcp://127.0.0.1:0 \
    >"$tmp/broker.log" 2>&1 &
bpid=$!
for _ in $(seq 50); do
    grep -q 'ready' "$tmp/broker.log" && break
    kill -0 "$bpid" 2>/dev/null || break
    sleep 0.1
done
if grep -q 'ready' "$tmp/broker.log" &&
    grep -qF "using policy $root/etc/smartshop/policies/routing.lua (flag or config file), services $root/etc/smartshop/services" "$tmp/broker.log"; then
    ok "the installed broker starts with the installed broker.lua (and names its policy and services)"
else
    bad "the installed broker starts with the installed broker.lua" "$tmp/broker.log"
fi
kill -TERM "$bpid" 2>/dev/null
wait "$bpid" 2>/dev/null

# smartshop-ctl finds the installed library (RPATH), not the build tree's
ctl=$root/usr/local/bin/smartshop-ctl
loaded=$(ldd "$ctl" 2>/dev/null | awk '$1 == "libsmartshop.so.0" { print $3 }')
if [ -n "$loaded" ] && [ "$(realpath "$loaded")" = "$(realpath "$root/usr/local/lib/libsmartshop.so.0")" ]; then
    ok "smartshop-ctl loads libsmartshop from the install root (RPATH \$ORIGIN/../lib)"
else
    ldd "$ctl" >"$tmp/ldd" 2>&1
    bad "smartshop-ctl loads libsmartshop from the install root" "$tmp/ldd"
fi
"$ctl" --help >"$tmp/ctl-help" 2>&1 && ok "installed smartshop-ctl --help runs" ||
    bad "installed smartshop-ctl --help runs" "$tmp/ctl-help"

if PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --exists smartshop 2>"$tmp/pc.log"; then
    ok "pkg-config finds smartshop.pc"
else
    bad "pkg-config finds smartshop.pc" "$tmp/pc.log"
fi

# DESTDIR: nothing run on the system, everything said
if [ -e "$tmp/called" ]; then
    bad "DESTDIR mode ran system commands" "$tmp/called"
else
    ok "DESTDIR mode ran no useradd/systemctl/ldconfig"
fi
if grep -q 'would run: useradd .*smartshop' "$tmp/install1.log" &&
    grep -q 'would run: systemctl enable --now smartshop-broker.service' "$tmp/install1.log"; then
    ok "DESTDIR mode says it would create the user and enable the service"
else
    bad "DESTDIR mode says what it would do" "$tmp/install1.log"
fi

# --- 2. the second run changes nothing ---
snapshot() { (cd "$root" && find . -print0 | sort -z | xargs -0 stat -c '%n %s %Y %a' && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
snapshot >"$tmp/snap1"
sleep 1.1    # so that a rewritten file would show a new mtime
if run_script "$tmp/install2.log" --destdir "$root" --no-build --build-dir "$build"; then
    ok "second install_broker.sh run succeeds"
else
    bad "second install_broker.sh run succeeds" "$tmp/install2.log"
fi
snapshot >"$tmp/snap2"
if diff "$tmp/snap1" "$tmp/snap2" >"$tmp/snapdiff"; then
    ok "second run: every file unchanged (content, size, mtime, mode), no .dist"
else
    bad "second run changed files" "$tmp/snapdiff"
fi
grep -q '^    installed' "$tmp/install2.log" && bad "second run says 'installed'" "$tmp/install2.log" ||
    ok "second run installs nothing anew"

# --- 3. an edited config survives, the shipped one lands beside it ---
echo '-- an operator was here' >>"$root/etc/smartshop/broker.lua"
echo '-- edited policy' >>"$root/etc/smartshop/policies/routing.lua"
cp "$root/etc/smartshop/broker.lua" "$tmp/edited.lua"
rm "$doc/examples/services/echo.lua"      # a deleted file comes back
run_script "$tmp/install3.log" --destdir "$root" --no-build --build-dir "$build" ||
    bad "third run (after edits) succeeds" "$tmp/install3.log"
if cmp -s "$tmp/edited.lua" "$root/etc/smartshop/broker.lua" &&
    cmp -s "$src/packaging/broker.lua" "$root/etc/smartshop/broker.lua.dist" &&
    grep -q 'edited policy' "$root/etc/smartshop/policies/routing.lua" &&
    [ -f "$root/etc/smartshop/policies/routing.lua.dist" ]; then
    ok "edited broker.lua and routing.lua kept; shipped versions as .dist"
else
    bad "edited files kept, .dist written" "$tmp/install3.log"
fi
[ -f "$doc/examples/services/echo.lua" ] && ok "a deleted shipped file is installed again" ||
    bad "a deleted shipped file is installed again" "$tmp/install3.log"
grep -q 'diff .*broker.lua .*broker.lua.dist' "$tmp/install3.log" &&
    ok "the run tells how to compare edited files with .dist" ||
    bad "the run tells how to compare edited files with .dist" "$tmp/install3.log"
dist_before=$(stat -c %Y "$root/etc/smartshop/broker.lua.dist" 2>/dev/null)
sleep 1.1    # so that a rewritten .dist would show a new mtime
run_script "$tmp/install4.log" --destdir "$root" --no-build --build-dir "$build"
cmp -s "$tmp/edited.lua" "$root/etc/smartshop/broker.lua" && ok "a fourth run still keeps the edit" ||
    bad "a fourth run still keeps the edit" "$tmp/install4.log"
[ -n "$dist_before" ] && [ "$(stat -c %Y "$root/etc/smartshop/broker.lua.dist")" = "$dist_before" ] &&
    ok "a fourth run leaves the unchanged broker.lua.dist alone (not rewritten each run)" ||
    bad "a fourth run leaves the unchanged broker.lua.dist alone" "$tmp/install4.log"

# --- 4. uninstall: everything but the edits ---
if run_script "$tmp/uninstall.log" --destdir "$root" --uninstall; then
    ok "install_broker.sh --uninstall"
else
    bad "install_broker.sh --uninstall" "$tmp/uninstall.log"
fi
(cd "$root" && find . -type f | sort) >"$tmp/left"
printf '%s\n' ./etc/smartshop/broker.lua ./etc/smartshop/policies/routing.lua >"$tmp/left.want"
if diff "$tmp/left.want" "$tmp/left" >"$tmp/left.diff"; then
    ok "--uninstall removed every file but the two edited ones"
else
    bad "--uninstall left exactly the edited files" "$tmp/left.diff"
fi
grep -q 'would run: systemctl disable --now smartshop-broker.service' "$tmp/uninstall.log" &&
    ok "--uninstall (DESTDIR) says it would stop and disable the service" ||
    bad "--uninstall says it would disable the service" "$tmp/uninstall.log"
run_script "$tmp/uninstall2.log" --destdir "$root" --uninstall &&
    ok "--uninstall twice is fine" || bad "--uninstall twice is fine" "$tmp/uninstall2.log"

# --- 5. install again, then --uninstall --purge: nothing left ---
run_script "$tmp/install5.log" --destdir "$root" --no-build --build-dir "$build" ||
    bad "install after uninstall" "$tmp/install5.log"
run_script "$tmp/purge.log" --destdir "$root" --uninstall --purge ||
    bad "--uninstall --purge" "$tmp/purge.log"
left=$(cd "$root" && find . -type f | head -n 5)
if [ -z "$left" ] && [ ! -e "$root/etc/smartshop" ] && [ ! -e "$root/usr/local/bin" ]; then
    ok "--uninstall --purge leaves no file and no directory it made"
else
    (cd "$root" && find . | sort) >"$tmp/purge.left"
    bad "--uninstall --purge leaves nothing" "$tmp/purge.left"
fi
grep -q 'would run: userdel smartshop' "$tmp/purge.log" && ok "--purge says it would remove the user" ||
    bad "--purge says it would remove the user" "$tmp/purge.log"
[ -e "$tmp/called" ] && bad "system commands were run" "$tmp/called"

finish
