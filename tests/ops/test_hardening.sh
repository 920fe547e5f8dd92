#!/usr/bin/env bash
# The release build is hardened (docs/security.md, "Build hardening"):
# every program and library is position-independent, fully RELRO (GOT
# read-only after start), stack-protected, and built with
# _FORTIFY_SOURCE=2 (glibc's checked memcpy, snprintf, ...).
# Usage: test_hardening.sh BINARY...
set -u
fail=0
check() {   # file, description, command...
    local file=$1 what=$2; shift 2
    if "$@" >/dev/null 2>&1; then
        echo "ok   $(basename "$file"): $what"
    else
        echo "FAIL $(basename "$file"): $what"
        fail=1
    fi
}
for bin in "$@"; do
    [ -e "$bin" ] || { echo "FAIL $bin: not found"; fail=1; continue; }
    check "$bin" "position-independent (ELF type DYN)" bash -c "readelf -h '$bin' | grep -q 'Type: *DYN'"
    check "$bin" "RELRO segment" bash -c "readelf -lW '$bin' | grep -q GNU_RELRO"
    check "$bin" "bound now (full RELRO)" bash -c "readelf -dW '$bin' | grep -Eq 'BIND_NOW|FLAGS_1.*NOW'"
    check "$bin" "stack protector (__stack_chk_fail)" bash -c "readelf -sW --dyn-syms '$bin' | grep -q __stack_chk_fail"
    check "$bin" "_FORTIFY_SOURCE (a __*_chk function)" bash -c "readelf -sW --dyn-syms '$bin' | grep -Eq '__[a-z]+_chk@'"
    check "$bin" "no executable stack" bash -c "readelf -lW '$bin' | grep GNU_STACK | grep -vq RWE"
done
exit $fail
