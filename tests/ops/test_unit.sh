#!/usr/bin/env bash
# test_unit.sh: lint packaging/smartshop-broker.service.
#
#   bash tests/ops/test_unit.sh [BROKER_BINARY]   (default: build/smartshop-broker)
#
# `systemd-analyze verify` on the unit (ExecStart pointed at the built
# broker, since /usr/bin may have none here), failing on any warning it
# prints about the unit; `systemd-analyze security --offline` for the
# exposure score; and the settings docs/operations.md promises. Without
# systemd-analyze (Debian package `systemd`) it skips, with exit code 77.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
unit_src=$src/packaging/smartshop-broker.service
broker=${1:-$src/build/smartshop-broker}
pass=0 fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/smartshop-ops-unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() {
    echo "FAIL: $1"
    [ -n "${2:-}" ] && [ -s "$2" ] && sed 's/^/    | /' "$2"
    fail=$((fail + 1))
}

if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: systemd-analyze not found (apt-get install systemd); the unit file was not linted"
    exit 77
fi
[ -f "$unit_src" ] || { echo "FAIL: $unit_src missing"; exit 1; }
[ -x "$broker" ] || { echo "FAIL: broker $broker not built"; exit 1; }
broker=$(cd "$(dirname "$broker")" && pwd)/$(basename "$broker")
echo "# $(systemd-analyze --version | head -n 1)"

# --- 1. systemd-analyze verify: no error and no warning about the unit ---
unit=$tmp/smartshop-broker.service
sed "s|/usr/bin/smartshop-broker|$broker|" "$unit_src" >"$unit"
systemd-analyze verify --man=no "$unit" >"$tmp/verify.log" 2>&1
rc=$?
if [ "$rc" = 0 ] && ! grep -q 'smartshop-broker.service' "$tmp/verify.log"; then
    ok "systemd-analyze verify: no errors, no warnings"
else
    bad "systemd-analyze verify (exit $rc)" "$tmp/verify.log"
fi

# A unit with a typo must be caught (the check above is not blind).
sed 's/^ProtectSystem=strict/ProtectSystem=stricct/' "$unit" >"$tmp/typo.service"
mkdir -p "$tmp/typo" && mv "$tmp/typo.service" "$tmp/typo/smartshop-broker.service"
systemd-analyze verify --man=no "$tmp/typo/smartshop-broker.service" >"$tmp/typo.log" 2>&1
if grep -q 'smartshop-broker.service' "$tmp/typo.log"; then
    ok "verify reports a misspelt setting (the check can fail)"
else
    bad "verify reports a misspelt setting" "$tmp/typo.log"
fi

# --- 2. the exposure score of the hardening ---
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    systemd-analyze security --offline=yes --no-pager "$unit" >"$tmp/security.log" 2>&1
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$tmp/security.log")
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }'; then
        ok "systemd-analyze security: exposure $score (at most 2.5)"
    else
        bad "systemd-analyze security: exposure ${score:-?} (want at most 2.5)" "$tmp/security.log"
    fi
else
    echo "# systemd-analyze security --offline not supported here; exposure not rated"
fi

# --- 3. the settings the service depends on ---
want() { # want KEY=VALUE: the unit has exactly this line
    if grep -qxF "$1" "$unit_src"; then ok "unit has $1"; else bad "unit has $1"; fi
}
want "Type=notify"
want "User=smartshop"
want "ExecStart=/usr/bin/smartshop-broker --config /etc/smartshop/broker.lua"
# shellcheck disable=SC2016  # the $ is literal
want 'ExecReload=/bin/kill -HUP $MAINPID'
want "Restart=on-failure"
want "RestartPreventExitStatus=2"
want "NoNewPrivileges=yes"
want "ProtectSystem=strict"
want "ProtectHome=yes"
want "PrivateTmp=yes"
want "PrivateDevices=yes"
want "CapabilityBoundingSet="
want "MemoryDenyWriteExecute=yes"
want "SystemCallFilter=@system-service"
want "WantedBy=multi-user.target"

# --- 4. every flag in ExecStart is one the broker knows ---
if "$broker" --help >"$tmp/help" 2>&1 && grep -q -- '--config' "$tmp/help"; then
    ok "the broker has --config (ExecStart's only flag)"
else
    bad "the broker has --config" "$tmp/help"
fi

echo "ops.unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
