#!/usr/bin/env bash
# test_deb.sh: the Debian packages, as an operator gets them (issue 23).
#
#   sudo bash tests/ops/test_deb.sh
#
# 1. builds the packages from a copy of the source (dpkg-buildpackage -b, as
#    `make deb` does) and runs lintian on them: an error fails the test;
# 2. builds them again as a newer version (a bumped debian/changelog, and a
#    shipped routing.lua that changed), reusing the first build's objects;
# 3. in a throw-away root, installs the first version with dpkg, checks what
#    landed (user, unit, conffiles, an empty services directory, man pages,
#    completion, the library through pkg-config), starts the broker as its
#    unit would (the unit's ExecStart, User, Group and WorkingDirectory),
#    answers the seed's client (examples/python/test_client.py) and
#    smartshop-ctl, checks a broker started elsewhere without --config finds
#    /etc/smartshop, edits routing.lua, upgrades to the second version
#    (dpkg --force-confold, as an unattended upgrade: the edit is kept, the
#    new shipped file lands beside it as routing.lua.dpkg-dist), answers
#    again, and purges; then install_broker.sh installs, removes and purges
#    the same packages: no file, user, group or unit is left behind.
#
# The throw-away root is this machine's own root file system under an
# overlay whose writes go to a tmpfs, entered with chroot in private mount,
# PID and network namespaces (unshare): dpkg and the maintainer scripts run
# for real, with only what this machine has installed (no network), the
# broker's port is private, and whatever the test leaves (files, mounts,
# processes) goes with the namespaces, even on failure. What the
# packages left after the purge is read from the overlay's upper layer.
# systemd is not running there (it is not PID 1): the unit's start is
# imitated, its enabling checked; tests/ops/test_systemd.sh boots one.
#
# Skips (exit 77) unless run as root with unshare and overlayfs. Needs the
# packages of the Makefile's PKGS_DEB and debian/control's Build-Depends
# (`make deps-test`). Takes about a minute on 2 cores.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
jobs=${JOBS:-2}

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (dpkg in a throw-away root)"
command -v unshare >/dev/null || skip "no unshare (util-linux)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "no overlayfs"

pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() {
    echo "FAIL: $1"
    shift
    local f
    for f in "$@"; do [ -s "$f" ] && tail -n 40 "$f" | sed 's/^/    | /'; done
    fail=$((fail + 1))
}
finish() {
    echo "ops.deb: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

missing=""
for cmd in dpkg-buildpackage dpkg-checkbuilddeps dh lintian; do
    command -v "$cmd" >/dev/null || missing="$missing $cmd"
done
if [ -n "$missing" ]; then
    echo "FAIL: missing:$missing (make deps-test installs them)"
    exit 1
fi
if ! (cd "$src" && dpkg-checkbuilddeps) >/dev/null 2>&1; then
    echo "FAIL: $(cd "$src" && dpkg-checkbuilddeps 2>&1) (make deps-test installs them)"
    exit 1
fi

tmp=$(mktemp -d /var/tmp/smartshop-ops-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$tmp/b/src" "$tmp/v1" "$tmp/v2" "$tmp/log"

# --- 1. build, lintian ---
if [ -d "$src/.git" ] || [ -f "$src/.git" ]; then
    (cd "$src" && git ls-files -z -co --exclude-standard | tar -c --null -T - -f -) | tar -x -C "$tmp/b/src"
else
    (cd "$src" && tar -c --exclude='./build*' --exclude='./obj-*' --exclude='./Testing' -f - .) | tar -x -C "$tmp/b/src"
fi
build_debs() { # build_debs OUTDIR LOG [dpkg-buildpackage args]
    local out=$1 log=$2
    shift 2
    (cd "$tmp/b/src" && dpkg-buildpackage -us -uc -b -j"$jobs" "$@") >"$log" 2>&1 || return 1
    mv "$tmp/b/"*.deb "$tmp/b/"*.changes "$tmp/b/"*.buildinfo "$out/"
}
t0=$SECONDS
if build_debs "$tmp/v1" "$tmp/log/build1"; then
    ok "dpkg-buildpackage -b ($((SECONDS - t0)) s)"
else
    bad "dpkg-buildpackage -b" "$tmp/log/build1"
    finish
fi
want_debs="smartshop-broker smartshop-ctl libsmartshop0 libsmartshop-dev python3-smartshop"
for p in $want_debs; do
    [ -f "$(echo "$tmp/v1/${p}_"*.deb)" ] || bad "package $p built"
done

lintian --fail-on error "$tmp/v1/"*.changes >"$tmp/log/lintian" 2>&1
rc=$?
if [ "$rc" = 0 ] && ! grep -q '^E:' "$tmp/log/lintian"; then
    ok "lintian: no errors ($(grep -c '^W:' "$tmp/log/lintian") warnings)"
else
    bad "lintian reports no errors (exit $rc)" "$tmp/log/lintian"
fi

# the second version: a newer changelog entry and a changed shipped policy
v1=$(dpkg-parsechangelog -l "$tmp/b/src/debian/changelog" -S Version)
v2=$v1+test1
{
    printf 'smartshop (%s) unstable; urgency=medium\n\n  * test_deb.sh: an upgrade.\n\n' "$v2"
    printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$tmp/b/src/debian/changelog" -S Maintainer)" "$(date -R)"
    cat "$tmp/b/src/debian/changelog"
} >"$tmp/changelog" && mv "$tmp/changelog" "$tmp/b/src/debian/changelog"
echo "-- shipped by $v2" >>"$tmp/b/src/policies/routing.lua"
rm -f "$tmp/b/src/debian/files"     # -nc keeps it, with the first build's buildinfo in it
t0=$SECONDS
if build_debs "$tmp/v2" "$tmp/log/build2" -nc; then
    ok "rebuilt as $v2 ($((SECONDS - t0)) s)"
else
    bad "rebuild as $v2" "$tmp/log/build2"
    finish
fi
rm -rf "$tmp/b"

# --- 2. in the throw-away root ---
cat >"$tmp/inroot.sh" <<'EOF'
#!/bin/bash
# runs chrooted in the overlay; $tmp is bind-mounted at /t
set -u
v1=$1 v2=$2     # $3: the source tree (this machine's, seen through the overlay)
srcdir=$3
res=/t/results
export PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8
ok() { echo "ok: $1" >>"$res"; }
bad() {
    echo "FAIL: $1" >>"$res"
    shift
    local f
    for f in "$@"; do [ -s "$f" ] && tail -n 30 "$f" | sed 's/^/    | /' >>"$res"; done
}
expect() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
debs() { local d=$1; echo "$d"/smartshop-broker_*.deb "$d"/smartshop-ctl_*.deb "$d"/libsmartshop0_*.deb "$d"/libsmartshop-dev_*.deb "$d"/python3-smartshop_*.deb; }
ip link set lo up

unit=/lib/systemd/system/smartshop-broker.service
broker_pid=""
# start_broker LOG: as the unit starts it, and waits until it listens
start_broker() {
    local log=$1 exec_start user group wd
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
    user=$(sed -n 's/^User=//p' "$unit")
    group=$(sed -n 's/^Group=//p' "$unit")
    wd=$(sed -n 's/^WorkingDirectory=//p' "$unit")
    # shellcheck disable=SC2086  # ExecStart is words
    (cd "$wd" && exec setpriv --reuid="$user" --regid="$group" --init-groups -- $exec_start) >"$log" 2>&1 &
    broker_pid=$!
    wait_for "ready: listening" "$log"
}
wait_for() { # wait_for TEXT LOG: up to 10 s, while the broker lives
    for _ in $(seq 100); do
        grep -q "$1" "$2" && return 0
        kill -0 "$broker_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop_broker() {
    [ -n "$broker_pid" ] || return 0
    kill -TERM "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
    broker_pid=""
}
client() { # the demo's client, from the package's examples, on the packaged
           # Python library (python3-smartshop)
    timeout 20 /usr/bin/python3 \
        /usr/share/doc/smartshop-broker/examples/python/test_client.py --timeout 10
}

# --- install ---
# shellcheck disable=SC2046
if dpkg -i $(debs /t/v1) >/t/log/install1 2>&1; then
    ok "dpkg -i the packages ($v1)"
else
    bad "dpkg -i the packages ($v1)" /t/log/install1
    exit 1
fi
pw=$(getent passwd smartshop)
expect "postinst made the system user smartshop (no login)" \
    bash -c '[ -n "$0" ] && [ "$(echo "$0" | cut -d: -f3)" -lt 1000 ] && [ "$(echo "$0" | cut -d: -f7)" = /usr/sbin/nologin ]' "$pw"
expect "the unit is installed: $unit" [ -f "$unit" ]
expect "the unit is enabled (multi-user.target.wants)" [ -L /etc/systemd/system/multi-user.target.wants/smartshop-broker.service ]
conffiles=$(dpkg-query -W -f='${Conffiles}' smartshop-broker)
expect "conffiles: /etc/smartshop/broker.lua and policies/routing.lua" \
    bash -c 'grep -q " /etc/smartshop/broker.lua " <<<"$0" && grep -q " /etc/smartshop/policies/routing.lua " <<<"$0"' "$conffiles"
expect "/etc/smartshop/services exists and is empty (no demo service live)" \
    bash -c '[ -d /etc/smartshop/services ] && [ -z "$(ls -A /etc/smartshop/services)" ]'
expect "the demo services are examples" [ -f /usr/share/doc/smartshop-broker/examples/services/inventory.lua ]
for page in smartshop-broker.8 smartshop-ctl.1 smartshop-lua.7; do
    f=/usr/share/man/man${page##*.}/$page.gz
    if [ -f "$f" ] && man -l "$f" 2>/t/log/man.$page | grep -q NAME && [ ! -s /t/log/man.$page ]; then
        ok "man page $page renders without warnings"
    else
        bad "man page $page renders without warnings" /t/log/man.$page
    fi
done
comp=$(bash -c 'source /usr/share/bash-completion/bash_completion 2>/dev/null
    source /usr/share/bash-completion/completions/smartshop-ctl
    COMP_WORDS=(smartshop-ctl re); COMP_CWORD=1; COMP_LINE="smartshop-ctl re"; COMP_POINT=${#COMP_LINE}
    _smartshop_ctl; echo "${COMPREPLY[*]}"' 2>&1)
comp=$(printf '%s\n' $comp | sort | tr '\n' ' ')
expect "bash completion: smartshop-ctl re<TAB> offers record reload replay reply request ($comp)" \
    [ "$comp" = "record reload replay reply request " ]
expect "smartshop-ctl needs no RPATH (finds libsmartshop.so.0 on the system path)" \
    bash -c '! readelf -d /usr/bin/smartshop-ctl | grep -qE "RPATH|RUNPATH" && ldd /usr/bin/smartshop-ctl | grep -qE "libsmartshop.so.0 => /(usr/)?lib/"'
if cc -o /tmp/test_client /usr/share/doc/smartshop-broker/examples/c/test_client.c \
    $(pkg-config --cflags --libs smartshop) >/t/log/cc 2>&1; then
    ok "libsmartshop-dev: examples/c/test_client.c builds with pkg-config"
else
    bad "libsmartshop-dev: examples/c/test_client.c builds with pkg-config" /t/log/cc
fi
expect "libsmartshop-dev: the CMake package is there" [ -f "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/cmake/smartshop/smartshopConfig.cmake" ]

# --- the broker as its unit starts it ---
cp /usr/share/doc/smartshop-broker/examples/services/echo.lua /etc/smartshop/services/
if start_broker /t/log/broker1; then
    ok "the broker starts as the unit would ($(sed -n 's/^ExecStart=//p' "$unit"), user $(sed -n 's/^User=//p' "$unit"))"
else
    bad "the broker starts as the unit would" /t/log/broker1
fi
expect "it runs as smartshop" [ "$(ps -o user= -p "$broker_pid")" = smartshop ]
expect "its start-up line names /etc/smartshop's policy and services" \
    grep -q "using policy /etc/smartshop/policies/routing.lua (flag or config file), services /etc/smartshop/services (flag or config file)" /t/log/broker1
expect "the echo service copied from the examples is live" grep -q "service echo-service loaded" /t/log/broker1
if client >/t/log/client1 2>&1 && grep -q '"hello": "world"' /t/log/client1; then
    ok "the seed's client gets its echo"
else
    bad "the seed's client gets its echo" /t/log/client1 /t/log/broker1
fi
out=$(smartshop-ctl --json request echo-service echo '{"n": 1}' 2>&1)
expect "smartshop-ctl request echo-service echo" [ "$out" = '{"n":1}' ]
comp=$(bash -c 'source /usr/share/bash-completion/bash_completion 2>/dev/null
    source /usr/share/bash-completion/completions/smartshop-ctl
    COMP_WORDS=(smartshop-ctl request ec); COMP_CWORD=2; COMP_LINE="smartshop-ctl request ec"; COMP_POINT=${#COMP_LINE}
    _smartshop_ctl; echo "${COMPREPLY[*]}"' 2>&1)
expect "bash completion: smartshop-ctl request ec<TAB> asks the broker: echo-service ($comp)" [ "$comp" = "echo-service" ]
stop_broker

# started by hand elsewhere, without --config: the built-in defaults are /etc/smartshop's
(cd / && exec setpriv --reuid=smartshop --regid=smartshop --init-groups -- \
    smartshop-broker --endpoint tcp://127.0.0.1:5556) >/t/log/broker-elsewhere 2>&1 &
broker_pid=$!
wait_for "ready: listening" /t/log/broker-elsewhere
if grep -q "using policy /etc/smartshop/policies/routing.lua (built-in default), services /etc/smartshop/services (built-in default)" /t/log/broker-elsewhere &&
    grep -q "service echo-service loaded" /t/log/broker-elsewhere; then
    ok "started from / without --config, it uses /etc/smartshop and says so"
else
    bad "started from / without --config, it uses /etc/smartshop and says so" /t/log/broker-elsewhere
fi
stop_broker

# --- upgrade, keeping an edited routing.lua ---
echo "-- edited by the operator" >>/etc/smartshop/policies/routing.lua
cp /etc/smartshop/policies/routing.lua /tmp/routing.edited
# shellcheck disable=SC2046
if dpkg -i --force-confdef --force-confold $(debs /t/v2) >/t/log/install2 2>&1; then
    ok "dpkg -i the $v2 packages (upgrade, unattended: --force-confold)"
else
    bad "upgrade to $v2" /t/log/install2
fi
expect "dpkg says smartshop-broker is $v2" [ "$(dpkg-query -W -f='${Version}' smartshop-broker)" = "$v2" ]
expect "the edited routing.lua is kept" cmp -s /tmp/routing.edited /etc/smartshop/policies/routing.lua
expect "the new shipped routing.lua is beside it as routing.lua.dpkg-dist" \
    grep -q "shipped by $v2" /etc/smartshop/policies/routing.lua.dpkg-dist
expect "the unedited broker.lua has no .dpkg-dist" [ ! -e /etc/smartshop/broker.lua.dpkg-dist ]
if start_broker /t/log/broker2 && client >/t/log/client2 2>&1 && grep -q '"hello": "world"' /t/log/client2; then
    ok "after the upgrade the broker starts and answers the seed's client"
else
    bad "after the upgrade the broker starts and answers the seed's client" /t/log/client2 /t/log/broker2
fi
stop_broker

# --- purge ---
if dpkg --purge smartshop-broker smartshop-ctl libsmartshop-dev libsmartshop0 python3-smartshop >/t/log/purge 2>&1; then
    ok "dpkg --purge the packages"
else
    bad "dpkg --purge the packages" /t/log/purge
fi
expect "purged: no user smartshop" bash -c '! getent passwd smartshop'
expect "purged: no group smartshop" bash -c '! getent group smartshop'
expect "purged: /etc/smartshop is gone (with the operator's service and the .dpkg-dist)" [ ! -e /etc/smartshop ]
expect "purged: the unit and its enablement are gone" \
    bash -c '[ ! -e /lib/systemd/system/smartshop-broker.service ] && [ ! -L /etc/systemd/system/multi-user.target.wants/smartshop-broker.service ]'
expect "purged: dpkg knows none of them" bash -c '! dpkg-query -W smartshop-broker smartshop-ctl libsmartshop0 libsmartshop-dev python3-smartshop 2>/dev/null | grep -q .'

# --- install_broker.sh: the same packages, through the seed's command ---
script=$3/install_broker.sh
if bash "$script" --no-build --deb-dir /t/v2 >/t/log/script-install 2>&1 &&
    head -n 1 /t/log/script-install | grep -q '^install_broker.sh: with dpkg'; then
    ok "install_broker.sh --no-build --deb-dir: says 'with dpkg', installs the packages"
else
    bad "install_broker.sh --no-build --deb-dir: says 'with dpkg', installs the packages" /t/log/script-install
fi
expect "install_broker.sh: smartshop-broker $v2 installed, the user made" \
    bash -c '[ "$(dpkg-query -W -f="\${Version}" smartshop-broker)" = "$0" ] && getent passwd smartshop' "$v2"
expect "install_broker.sh: without systemd it says how to run the broker by hand" \
    grep -q "runuser -u smartshop -- /usr/bin/smartshop-broker --config /etc/smartshop/broker.lua" /t/log/script-install
echo "-- edited" >>/etc/smartshop/broker.lua
if bash "$script" --uninstall >/t/log/script-remove 2>&1; then
    ok "install_broker.sh --uninstall"
else
    bad "install_broker.sh --uninstall" /t/log/script-remove
fi
expect "--uninstall: the programs are gone, the edited broker.lua stays" \
    bash -c '[ ! -e /usr/bin/smartshop-broker ] && grep -q -- "-- edited" /etc/smartshop/broker.lua'
bash "$script" --uninstall --purge >/t/log/script-purge 2>&1
expect "install_broker.sh --uninstall --purge: /etc/smartshop and the user gone" \
    bash -c '[ ! -e /etc/smartshop ] && ! getent passwd smartshop && ! dpkg-query -W smartshop-broker 2>/dev/null | grep -q .'
EOF

# in the namespaces: the overlay, the root's own /proc and /dev, $tmp at /t
cat >"$tmp/outer.sh" <<'EOF'
#!/bin/bash
set -u
tmp=$1 v1=$2 v2=$3 src=$4
ov=$tmp/ov root=$tmp/ov/root
mount --make-rprivate / || exit 1
mkdir -p "$ov" && mount -t tmpfs -o size=2g tmpfs "$ov" || exit 1
mkdir -p "$ov/upper" "$ov/work" "$root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ov/upper,workdir=$ov/work" "$root" || exit 1
mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" || exit 1
mkdir -p "$root/t" && mount --bind "$tmp" "$root/t" || exit 1
# a root without the packages even if this machine has them
if chroot "$root" dpkg-query -W smartshop-broker >/dev/null 2>&1; then
    chroot "$root" dpkg --purge smartshop-broker smartshop-ctl libsmartshop-dev libsmartshop0 python3-smartshop >/dev/null 2>&1
fi
chroot "$root" sh -c 'rm -rf /etc/smartshop; getent passwd smartshop >/dev/null && userdel smartshop; getent group smartshop >/dev/null && groupdel smartshop; true'
(cd "$ov/upper" && find . ! -type d | sort) >"$tmp/upper.before"
chroot "$root" /bin/bash /t/inroot.sh "$v1" "$v2" "$src"
umount "$root/t"
(cd "$ov/upper" && find . ! -type d | sort) >"$tmp/upper.after"
(cd "$ov/upper" && find . -iname '*smartshop*' | sort) >"$tmp/upper.named"
EOF

touch "$tmp/results"
timeout -k 10 240 unshare --mount --pid --net --fork --kill-child bash "$tmp/outer.sh" "$tmp" "$v1" "$v2" "$src" \
    >"$tmp/log/outer" 2>&1
rc=$?
cat "$tmp/results"
pass=$((pass + $(grep -c '^ok:' "$tmp/results")))
fail=$((fail + $(grep -c '^FAIL:' "$tmp/results")))
if [ "$(grep -c '^ok:' "$tmp/results")" -lt 25 ]; then
    bad "the checks in the throw-away root ran to the end (namespace exit $rc)" "$tmp/log/outer"
fi

# --- what the purge left, from the overlay's upper layer ---
if [ -f "$tmp/upper.after" ]; then
    # files dpkg itself and the user database keep changing
    comm -13 "$tmp/upper.before" "$tmp/upper.after" |
        grep -vE '^\./(var/lib/dpkg/|var/log/|var/cache/(ldconfig|debconf|man|apt)/|var/lib/apt/extended_states$|etc/\.pwd\.lock$|etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$|etc/ld\.so\.cache$|tmp/test_client$|tmp/routing\.edited$|t$)' \
            >"$tmp/left" || true
    cat "$tmp/upper.named" >>"$tmp/left"
    if [ -s "$tmp/left" ]; then
        bad "the purge left nothing behind (files new since before the install):" "$tmp/left"
    else
        ok "the purge left nothing behind: no new file but dpkg's own records, no path named smartshop"
    fi
else
    bad "the overlay's upper layer was read after the purge" "$tmp/log/outer"
fi

finish
