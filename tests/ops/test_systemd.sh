#!/usr/bin/env bash
# test_systemd.sh: the service's whole life under a real systemd.
#
#   sudo bash tests/ops/test_systemd.sh [BUILD_DIR]     (default: build/)
#
# Boots this machine's own root filesystem in a container (systemd-nspawn
# --boot over an overlay whose writes go to a tmpfs, with a private
# network), and there, as docs/operations.md tells a newcomer: runs
# install_broker.sh --no-dpkg (the install by hand, from the build; the
# Debian packages are tests/ops/test_deb.sh's), puts the example echo
# service in /etc/smartshop/services, checks the unit is up (Type=notify), unprivileged and
# sandboxed, talks to it with smartshop-ctl, reads the journal, reloads the
# policy (SIGHUP, a broken policy refused), turns metrics on, crashes it
# (Restart=on-failure), breaks its config (exit 2: no restart loop),
# installs again (idempotent, an edited file kept), uninstalls, purges.
# Nothing on this machine changes but a tmpfs on /run/systemd/nspawn while
# it runs (when /run is not already a tmpfs).
#
# Skips (exit 77) unless run as root with systemd-nspawn (Debian package
# systemd-container) and overlayfs. Takes about 20 s.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" 2>/dev/null && pwd) || { echo "FAIL: no build directory ${1:-$src/build}"; exit 1; }

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (it boots a container)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not found (apt-get install systemd-container)"
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd to boot"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "no overlayfs"
for f in smartshop-broker smartshop-ctl; do
    [ -x "$build/$f" ] || { echo "FAIL: $build/$f is not built"; exit 1; }
done

tmp=$(mktemp -d /var/tmp/smartshop-ops-systemd.XXXXXX)
root=$tmp/root
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null
    done
    rm -rf "$tmp"
    [ -n "${made_run_dir:-}" ] && rmdir /run/systemd/nspawn 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$tmp/ov" "$root" "$tmp/e2e"
mount -t tmpfs -o size=2g tmpfs "$tmp/ov" || skip "cannot mount a tmpfs"
mounted+=("$tmp/ov")
mkdir -p "$tmp/ov/upper" "$tmp/ov/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/ov/upper,workdir=$tmp/ov/work" "$root" ||
    skip "cannot mount an overlay of /"
mounted+=("$root")
# nspawn keeps state under /run/systemd/nspawn and wants it on a tmpfs
[ -d /run/systemd/nspawn ] || { mkdir -p /run/systemd/nspawn && made_run_dir=1; }
if [ "$(stat -f -c %T /run/systemd/nspawn)" != tmpfs ]; then
    mount -t tmpfs tmpfs /run/systemd/nspawn && mounted=("/run/systemd/nspawn" "${mounted[@]}")
fi

# the container: its own machine id, no /tmp tmpfs over our bind mounts,
# and one unit that runs the checks and powers off
systemd-id128 new >"$root/etc/machine-id"
ln -sf /dev/null "$root/etc/systemd/system/tmp.mount"
cat >"$root/etc/systemd/system/smartshop-e2e.service" <<EOF
[Unit]
Description=smartshop e2e checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/bash /e2e/run.sh $src $build
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/smartshop-e2e.service "$root/etc/systemd/system/multi-user.target.wants/"

cat >"$tmp/e2e/run.sh" <<'EOF'
#!/bin/bash
# inside the container
src=$1 build=$2
exec >/e2e/out.log 2>&1
trap 'systemctl poweroff' EXIT
res=/e2e/result.log
ok() { echo "ok: $1" >>$res; echo "== ok: $1"; }
bad() { echo "FAIL: $1" >>$res; echo "== FAIL: $1"; }
expect() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
must() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; exit 1; fi; }
prop() { systemctl show -p "$1" --value smartshop-broker; }
set -x
cd "$src" || exit 1

./install_broker.sh --no-dpkg --no-build --build-dir "$build"
must "install_broker.sh installs and starts the service" [ $? = 0 ]
cp /usr/local/share/doc/smartshop-broker/examples/services/echo.lua /etc/smartshop/services/
sleep 1
must "the unit is active (Type=notify: start returned once it listened)" systemctl is-active --quiet smartshop-broker
expect "systemd knows the broker's status line" grep -q "listening on tcp://127.0.0.1:5555" <<<"$(prop StatusText)"
pid=$(prop MainPID)
st=$(cat /proc/"$pid"/status 2>/dev/null)
expect "runs as user smartshop" grep -q "^Uid:[[:space:]]*$(id -u smartshop)[[:space:]]" <<<"$st"
expect "no capabilities, no new privileges, a seccomp filter" \
    bash -c 'grep -q "^CapEff:[[:space:]]*0000000000000000" <<<"$0" && grep -q "^NoNewPrivs:[[:space:]]*1" <<<"$0" && grep -q "^Seccomp:[[:space:]]*2" <<<"$0"' "$st"

smartshop-ctl ping
expect "smartshop-ctl ping" [ $? = 0 ]
out=$(smartshop-ctl services)
expect "smartshop-ctl services lists echo-service" grep -q "^echo-service " <<<"$out"
out=$(smartshop-ctl --json request echo-service echo '{"hello": "world"}')
expect "smartshop-ctl request echo-service echo" [ "$out" = '{"hello":"world"}' ]

journalctl -u smartshop-broker --no-pager -o cat
expect "journal: readable lines (ready: listening)" bash -c 'journalctl -u smartshop-broker -o cat | grep -q "^ready: listening on tcp://127.0.0.1:5555$"'
expect "journal: info lines are not errors (priority prefixes read)" bash -c '! journalctl -u smartshop-broker -p err -o cat | grep -q "ready: listening"'

systemctl reload smartshop-broker
expect "systemctl reload" [ $? = 0 ]
sleep 0.5
expect "journal: SIGHUP reloads the policy" bash -c 'journalctl -u smartshop-broker -o cat | grep -q "SIGHUP: reloading the policy"'
cp /etc/smartshop/policies/routing.lua /tmp/routing.good
printf 'function route(msg)\n  return (\nend\n' >/etc/smartshop/policies/routing.lua
sleep 1.5
smartshop-ctl reload
expect "a broken policy: smartshop-ctl reload exits 1" [ $? = 1 ]
expect "journal: the refusal is an error line with file:line" bash -c 'journalctl -u smartshop-broker -p err -o cat | grep -q "policy refused.*routing.lua:3"'
expect "still running on the old policy" systemctl is-active --quiet smartshop-broker
cp /tmp/routing.good /etc/smartshop/policies/routing.lua
smartshop-ctl reload
expect "the policy fixed: smartshop-ctl reload exits 0" [ $? = 0 ]

sed -i 's|^-- metrics = |metrics = |' /etc/smartshop/broker.lua
systemctl restart smartshop-broker
out=$(/usr/bin/python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8555/metrics", timeout=3).read().decode())')
expect "metrics on: Prometheus text at http://127.0.0.1:8555/metrics" grep -q "^smartshop_uptime_seconds" <<<"$out"
smartshop-ctl metrics
expect "smartshop-ctl metrics" [ $? = 0 ]

pid=$(prop MainPID)
[ "$pid" -gt 1 ] && kill -SEGV "$pid"
sleep 3.5
expect "a crash: restarted (Restart=on-failure)" [ "$(prop NRestarts)" = 1 ]
expect "and answering again" smartshop-ctl ping

cp /etc/smartshop/broker.lua /tmp/broker.good
echo 'no_such_setting = 1' >>/etc/smartshop/broker.lua
systemctl restart smartshop-broker
sleep 3
expect "a bad config: failed with exit 2, not restarted in a loop" \
    [ "$(prop ActiveState)/$(prop ExecMainStatus)/$(prop NRestarts)" = "failed/2/0" ]
cp /tmp/broker.good /etc/smartshop/broker.lua
systemctl reset-failed smartshop-broker
systemctl start smartshop-broker
expect "started again" systemctl is-active --quiet smartshop-broker

./install_broker.sh --no-dpkg --no-build --build-dir "$build"
expect "install_broker.sh again: ok" [ $? = 0 ]
expect "the edited broker.lua kept, the shipped one beside it" bash -c 'grep -q "^metrics = " /etc/smartshop/broker.lua && [ -f /etc/smartshop/broker.lua.dist ]'
expect "running after the second install" systemctl is-active --quiet smartshop-broker

./install_broker.sh --no-dpkg --uninstall
expect "install_broker.sh --uninstall" [ $? = 0 ]
expect "the unit is gone" bash -c '! systemctl cat smartshop-broker >/dev/null 2>&1'
expect "the programs are gone" bash -c '[ ! -e /usr/local/bin/smartshop-broker ] && [ ! -e /usr/local/bin/smartshop-ctl ]'
expect "the edited config stays" [ -f /etc/smartshop/broker.lua ]
./install_broker.sh --no-dpkg --uninstall --purge
expect "--uninstall --purge: /etc/smartshop and the user gone" bash -c '[ ! -e /etc/smartshop ] && ! getent passwd smartshop'
EOF

echo "# booting this machine's root in a container (about 20 s)"
timeout 300 systemd-nspawn -q -D "$root" -M "smartshop-e2e-$$" --keep-unit --register=no \
    --link-journal=no --private-network --bind="$tmp/e2e:/e2e" --bind="$src:$src" \
    --bind="$build:$build" --boot >"$tmp/nspawn.log" 2>&1
rc=$?
if [ ! -s "$tmp/e2e/result.log" ]; then
    echo "FAIL: the container ran no checks (systemd-nspawn exit $rc)"
    sed 's/^/    | /' "$tmp/nspawn.log" | tail -n 40
    [ -f "$tmp/e2e/out.log" ] && sed 's/^/    | /' "$tmp/e2e/out.log" | tail -n 40
    exit 1
fi
cat "$tmp/e2e/result.log"
pass=$(grep -c '^ok:' "$tmp/e2e/result.log")
fail=$(grep -c '^FAIL:' "$tmp/e2e/result.log")
if [ "$fail" -gt 0 ] || [ "$pass" -lt 30 ]; then
    echo "--- what ran in the container (the end):"
    tail -n 150 "$tmp/e2e/out.log" | sed 's/^/    | /'
    [ "$pass" -lt 30 ] && echo "FAIL: only $pass checks ran (the script stopped early?)" && fail=$((fail + 1))
fi
echo "ops.systemd: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
