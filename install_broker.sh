#!/usr/bin/env bash
# install_broker.sh: install the Smartshop broker as the systemd service
# smartshop-broker.service. See docs/operations.md.
#
#   sudo ./install_broker.sh              build the Debian packages, install them
#   sudo ./install_broker.sh --uninstall  remove them (keeps edited config)
#   ./install_broker.sh --help            everything else
#
# With dpkg (Debian and its derivatives) it is a thin wrapper: `make deb`,
# then apt-get installs the packages, whose maintainer scripts create the
# user and enable and start the unit; dpkg keeps edited conffiles. Without
# dpkg, or with --prefix, --destdir or --no-dpkg, it does by hand what the
# packages do (the same files, user and unit), with a manifest for
# --uninstall. It says at the start which of the two it does.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT_NAME=smartshop-broker.service
SERVICE_USER=smartshop
CONF_DIR=/etc/smartshop
UNIT_DIR=/etc/systemd/system
PACKAGES="smartshop-broker smartshop-ctl libsmartshop0 libsmartshop-dev python3-smartshop"

PREFIX=${PREFIX:-}
DESTDIR=${DESTDIR:-}
BUILD_DIR=${BUILD:-$SRC_DIR/build}
DEB_DIR=${DEB_DIR:-$SRC_DIR/build-deb}
JOBS=${JOBS:-2}
mode=install
do_build=1
do_start=1
purge=0
use_dpkg=auto

usage() {
    cat <<EOF
Usage: ./install_broker.sh [options]
Installs smartshop-broker, smartshop-ctl and libsmartshop with their
configuration and the systemd unit $UNIT_NAME, and starts it.

With dpkg (the default on Debian): builds the Debian packages (make deb,
into build-deb/) and installs them with apt-get: $PACKAGES.
  /usr/bin/smartshop-broker, /usr/bin/smartshop-ctl, the library under /usr
  $CONF_DIR/broker.lua, policies/routing.lua   conffiles
  $CONF_DIR/services/                          empty: the Lua services to host
  /lib/systemd/system/$UNIT_NAME
  /usr/share/doc/smartshop-broker/examples/    demo services, example policies
The packages create the system user '$SERVICE_USER' and enable and start the
unit. An upgrade keeps configuration you edited (the new version lands
beside it as FILE.dpkg-dist).

Without dpkg (or with --prefix, --destdir, --no-dpkg): the same files by
hand, programs under PREFIX (default /usr/local), the unit in $UNIT_DIR,
and a list in PREFIX/share/smartshop/install-manifest for --uninstall; an
edited configuration file is kept, the new one written beside it as FILE.dist.

Options:
  --no-dpkg         install by hand even where dpkg is there
  --prefix DIR      (by hand) programs and the library under DIR (env PREFIX)
  --destdir DIR     (by hand) stage everything under DIR instead of / (env
                    DESTDIR); no user is created and systemctl is not run:
                    the script says what it would do
  --build-dir DIR   (by hand) the CMake build directory (env BUILD; default build/)
  --deb-dir DIR     (dpkg) where make deb puts the packages (env DEB_DIR;
                    default build-deb/)
  --no-build        do not build: install the packages in --deb-dir (dpkg),
                    or what --build-dir has (by hand)
  --no-start        install, but do not enable or start the service
  --uninstall       stop and disable the service, remove what was installed;
                    configuration you edited stays
  --purge           with --uninstall: remove $CONF_DIR entirely and the user
  -h, --help        show this help

Run as root (sudo), except with --destdir.
EOF
}

die() {
    echo "install_broker.sh: error: $*" >&2
    exit 1
}
say() { echo "$*"; }
step() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#*=} ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; DESTDIR=$2; shift ;;
    --destdir=*) DESTDIR=${1#*=} ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a directory"; BUILD_DIR=$2; shift ;;
    --build-dir=*) BUILD_DIR=${1#*=} ;;
    --deb-dir) [ $# -ge 2 ] || die "--deb-dir needs a directory"; DEB_DIR=$2; shift ;;
    --deb-dir=*) DEB_DIR=${1#*=} ;;
    --no-dpkg) use_dpkg=no ;;
    --no-build) do_build=0 ;;
    --no-start) do_start=0 ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install_broker.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

[ "$purge" = 1 ] && [ "$mode" != uninstall ] && { echo "install_broker.sh: --purge goes with --uninstall" >&2; exit 2; }

# dpkg, or by hand: said first, with the reason
if [ "$use_dpkg" = auto ]; then
    if [ -n "$PREFIX" ] || [ -n "$DESTDIR" ]; then
        use_dpkg=no
        why="--prefix or --destdir given: the packages install under /"
    elif command -v dpkg >/dev/null && command -v apt-get >/dev/null; then
        use_dpkg=yes
    else
        use_dpkg=no
        why="dpkg and apt-get are not on this machine"
    fi
else
    why="--no-dpkg"
fi
if [ "$use_dpkg" = yes ]; then
    echo "install_broker.sh: with dpkg: the Debian packages ($PACKAGES)"
else
    echo "install_broker.sh: without dpkg ($why): what the packages do, by hand"
fi
PREFIX=${PREFIX:-/usr/local}
case $PREFIX in /*) ;; *) die "--prefix must be an absolute path (got '$PREFIX')" ;; esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || PREFIX=/
if [ -n "$DESTDIR" ]; then
    mkdir -p "$DESTDIR" || die "cannot create DESTDIR $DESTDIR"
    DESTDIR=$(cd "$DESTDIR" && pwd)
    [ "$DESTDIR" = / ] && DESTDIR=""
fi
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$PWD/$BUILD_DIR ;; esac
case $DEB_DIR in /*) ;; *) DEB_DIR=$PWD/$DEB_DIR ;; esac

MANIFEST=$PREFIX/share/smartshop/install-manifest
DOC_DIR=$PREFIX/share/doc/smartshop-broker
# what an install by hand under /usr/local left (before the packages, this
# script's only way): the packages replace it
LEGACY_MANIFEST=/usr/local/share/smartshop/install-manifest

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "run as root: sudo $0 $* (or stage into a directory with --destdir DIR)"
fi

# system CMD...: a command that changes the running system; with DESTDIR
# only said, not done.
system() {
    if [ -n "$DESTDIR" ]; then
        echo "    would run:$(printf " %q" "$@")"
        return 0
    fi
    echo "   +$(printf " %q" "$@")"
    "$@"
}

systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

sum_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- the manifest: "KIND SHA256 PATH" per line; KIND is file (ours,
# replaced and removed freely), conf (removed only while unedited), dist
# (a FILE.dist we wrote) or dir (a directory we created). ---

declare -A old_kind=() old_sum=()
new_manifest=()

read_manifest() {
    local m=$DESTDIR$MANIFEST kind sum path
    [ -f "$m" ] || return 0
    while read -r kind sum path; do
        [ -n "${path:-}" ] || continue
        old_kind[$path]=$kind
        old_sum[$path]=$sum
    done <"$m"
}

record() { new_manifest+=("$1 $2 $3"); }

# mkdirs DIR: creates DIR (under DESTDIR) and records each directory made
mkdirs() {
    local dir=$1 missing=() d
    d=$dir
    while [ -n "$d" ] && [ "$d" != / ] && [ ! -d "$DESTDIR$d" ]; do
        missing=("$d" "${missing[@]+"${missing[@]}"}")
        d=$(dirname "$d")
    done
    for d in "${missing[@]+"${missing[@]}"}"; do
        mkdir -m 0755 "$DESTDIR$d"
        record dir - "$d"
    done
    # created by an earlier run: still ours
    [ "${old_kind[$dir]:-}" = dir ] && ! in_new_manifest "$dir" && record dir - "$dir"
    return 0
}

in_new_manifest() {
    local line
    for line in "${new_manifest[@]+"${new_manifest[@]}"}"; do
        [ "${line#* * }" = "$1" ] && return 0
    done
    return 1
}

# keep_dirs: every directory an earlier run created that still holds our files
keep_dirs() {
    local path
    for path in "${!old_kind[@]}"; do
        if [ "${old_kind[$path]}" = dir ] && [ -d "$DESTDIR$path" ] && ! in_new_manifest "$path"; then
            record dir - "$path"
        fi
    done
}

# install_program MODE SRC DEST: a file of ours, always replaced
install_program() {
    local mode=$1 src=$2 dest=$3
    mkdirs "$(dirname "$dest")"
    if [ -f "$DESTDIR$dest" ] && cmp -s "$src" "$DESTDIR$dest"; then
        say "    unchanged $dest"
    else
        install -m "$mode" "$src" "$DESTDIR$dest"
        say "    installed $dest"
    fi
    record file "$(sum_of "$DESTDIR$dest")" "$dest"
}

# install_conf SRC DEST: a configuration file, as dpkg treats conffiles:
# absent -> installed; unedited since we installed it -> replaced; edited
# (or not ours) -> kept, the new version written beside it as DEST.dist.
conf_kept=()
install_conf() {
    local src=$1 dest=$2 new target shipped
    target=$DESTDIR$dest
    new=$(sum_of "$src")
    shipped=${old_sum[$dest]:-}
    mkdirs "$(dirname "$dest")"
    if [ ! -e "$target" ]; then
        install -m 0644 "$src" "$target"
        say "    installed $dest"
        record conf "$new" "$dest"
    elif [ "$(sum_of "$target")" = "$new" ]; then
        record conf "$new" "$dest"
    elif [ "${old_kind[$dest]:-}" = conf ] && [ "$(sum_of "$target")" = "$shipped" ]; then
        install -m 0644 "$src" "$target"
        say "    updated $dest"
        record conf "$new" "$dest"
    else
        # (rewritten only when the shipped version changed)
        cmp -s "$src" "$target.dist" || install -m 0644 "$src" "$target.dist"
        say "    kept $dest (edited); the shipped version is $dest.dist"
        record conf "${shipped:--}" "$dest"
        record dist "$new" "$dest.dist"
        conf_kept+=("$dest")
        return 0
    fi
    # the file is the shipped one again: a .dist from an earlier run is stale
    if [ "${old_kind[$dest.dist]:-}" = dist ] && [ -e "$target.dist" ]; then
        rm -f "$target.dist"
        say "    removed $dest.dist (no longer differs)"
    fi
}

# remove_entry KIND SUM PATH: undoes one manifest line (dirs: later)
remove_entry() {
    local kind=$1 sum=$2 path=$3 target=$DESTDIR$3
    case $kind in
    file | dist)
        if [ -e "$target" ] || [ -L "$target" ]; then
            rm -f "$target"
            say "    removed $path"
        fi
        ;;
    conf)
        [ -e "$target" ] || return 0
        if [ "$(sum_of "$target")" = "$sum" ]; then
            rm -f "$target"
            say "    removed $path"
        else
            say "    kept $path (edited; --purge removes it)"
        fi
        ;;
    esac
}

# remove_dirs PATH...: the directories we created, deepest first, if empty
remove_dirs() {
    local d
    printf '%s\n' "$@" | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
        while IFS= read -r d; do
            if [ -n "$d" ] && [ -d "$DESTDIR$d" ]; then
                rmdir "$DESTDIR$d" 2>/dev/null || true
            fi
        done
}

write_manifest() {
    local tmp
    mkdirs "$(dirname "$MANIFEST")"
    tmp=$(mktemp)
    {
        echo "# install_broker.sh: what it installed (KIND SHA256 PATH); used by --uninstall"
        printf '%s\n' "${new_manifest[@]}" | sort -k3 -u
    } >"$tmp"
    if cmp -s "$tmp" "$DESTDIR$MANIFEST"; then
        rm -f "$tmp"            # unchanged: left as it was
    else
        install -m 0644 "$tmp" "$DESTDIR$MANIFEST"
        rm -f "$tmp"
    fi
}

# --- install ---

build() {
    if [ "$do_build" = 0 ]; then
        step "Using the existing build in $BUILD_DIR (--no-build)"
        [ -x "$BUILD_DIR/smartshop-broker" ] || die "$BUILD_DIR/smartshop-broker is not built (drop --no-build)"
        local configured
        configured=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
        [ "$configured" = "$PREFIX" ] ||
            die "$BUILD_DIR was configured for prefix '$configured', not '$PREFIX': drop --no-build to reconfigure it"
        return 0
    fi
    step "Building in $BUILD_DIR"
    if ! command -v make >/dev/null; then
        [ "$(id -u)" = 0 ] || die "make is missing: apt-get install make (as root)"
        say "    installing make"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null; } ||
            die "cannot install make"
    fi
    # the Debian packages the build needs (the Makefile's list)
    make -s -C "$SRC_DIR" deps || die "installing the build dependencies failed (make deps)"
    local configured
    configured=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] || [ "$configured" != "$PREFIX" ]; then
        cmake -S "$SRC_DIR" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null || die "cmake configure failed"
    fi
    cmake --build "$BUILD_DIR" -j"$JOBS" >"$BUILD_DIR/install_broker.build.log" 2>&1 || {
        tail -n 30 "$BUILD_DIR/install_broker.build.log" >&2
        die "the build failed (full log: $BUILD_DIR/install_broker.build.log)"
    }
    say "    built smartshop-broker and smartshop-ctl"
}

install_programs() {
    step "Installing programs and the client library under $DESTDIR$PREFIX"
    install_program 0755 "$BUILD_DIR/smartshop-broker" "$PREFIX/bin/smartshop-broker"
    # cmake --install: libsmartshop, smartshop.h, smartshop.pc, the CMake
    # package and smartshop-ctl (with an RPATH to the installed library).
    # Its own list of what it installed is read from what it prints.
    local log line path scratch
    log=$(mktemp)
    # first into a scratch root, to learn (and record) the directories it needs
    scratch=$(mktemp -d)
    if ! DESTDIR=$scratch cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$log" "$scratch"
        die "cmake --install failed"
    fi
    while IFS= read -r line; do
        case $line in "-- Installing: "* | "-- Up-to-date: "*) ;; *) continue ;; esac
        path=${line#-- *: }
        mkdirs "$(dirname "${path#"$scratch"}")"
    done <"$log"
    rm -rf "$scratch"
    if ! DESTDIR=$DESTDIR cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "cmake --install failed"
    fi
    while IFS= read -r line; do
        case $line in "-- Installing: "* | "-- Up-to-date: "*) ;; *) continue ;; esac
        path=${line#-- *: }
        path=${path#"$DESTDIR"}
        if [ -f "$DESTDIR$path" ] && [ ! -L "$DESTDIR$path" ]; then
            record file "$(sum_of "$DESTDIR$path")" "$path"
        else
            record file - "$path"
        fi
        case $line in "-- Installing: "*) say "    installed $path" ;; *) say "    unchanged $path" ;; esac
    done <"$log"
    rm -f "$log"
    if ! in_new_manifest "$PREFIX/bin/smartshop-ctl"; then
        # a build whose CMake does not install it (yet): copy it
        [ -x "$BUILD_DIR/smartshop-ctl" ] || die "$BUILD_DIR/smartshop-ctl is not built"
        install_program 0755 "$BUILD_DIR/smartshop-ctl" "$PREFIX/bin/smartshop-ctl"
    fi
    # the files debian/*.install and .docs name from the source tree: the
    # docs, the examples, the bash completion (usr/ is PREFIX here)
    local doc line words dest f g
    while IFS= read -r doc; do
        case $doc in '' | '#'*) continue ;; esac
        install_program 0644 "$SRC_DIR/$doc" "$DOC_DIR/$(basename "$doc")"
    done <"$SRC_DIR/debian/smartshop-broker.docs"
    while IFS= read -r line; do
        case $line in '' | '#'*) continue ;; esac
        read -r -a words <<<"$line"
        [ "${#words[@]}" -ge 2 ] || continue
        dest=${words[-1]%/}
        case $dest in usr/*) dest=$PREFIX/${dest#usr/} ;; *) continue ;; esac   # etc/: install_config
        unset 'words[-1]'
        for f in "${words[@]}"; do
            # shellcheck disable=SC2086  # a glob of the source tree
            for g in $SRC_DIR/$f; do
                install_program 0644 "$g" "$dest/$(basename "$g")"
            done
        done
    done < <(cat "$SRC_DIR/debian/smartshop-broker.install" "$SRC_DIR/debian/smartshop-ctl.install")
    install_man_pages
    if [ -z "$DESTDIR" ]; then
        system ldconfig
    else
        echo "    would run: ldconfig"
    fi
}

# man/*.md as the package builds them (go-md2man), where it is installed
install_man_pages() {
    if ! command -v go-md2man >/dev/null; then
        say "    no man pages: go-md2man is not installed (apt-get install go-md2man)"
        return 0
    fi
    local md page out
    out=$(mktemp -d)
    for md in "$SRC_DIR"/man/*.md; do
        page=$(basename "$md" .md)
        go-md2man -in "$md" -out "$out/$page" || die "go-md2man $md failed"
        install_program 0644 "$out/$page" "$PREFIX/share/man/man${page##*.}/$page"
    done
    rm -rf "$out"
}

# The conffiles of the package (debian/smartshop-broker.install's etc/
# lines) and the empty services directory (its .dirs).
install_config() {
    step "Installing configuration in $DESTDIR$CONF_DIR"
    mkdirs "$CONF_DIR"
    local line words dest f
    while IFS= read -r line; do
        case $line in '' | '#'*) continue ;; esac
        read -r -a words <<<"$line"
        [ "${#words[@]}" -ge 2 ] || continue
        dest=${words[-1]%/}
        case $dest in etc/*) dest=/$dest ;; *) continue ;; esac
        unset 'words[-1]'
        for f in "${words[@]}"; do
            install_conf "$SRC_DIR/$f" "$dest/$(basename "$f")"
        done
    done <"$SRC_DIR/debian/smartshop-broker.install"
    while IFS= read -r dest; do
        case $dest in '' | '#'*) continue ;; esac
        mkdirs "/$dest"
    done <"$SRC_DIR/debian/smartshop-broker.dirs"
}

install_unit() {
    step "Installing the systemd unit $UNIT_DIR/$UNIT_NAME"
    local unit
    unit=$(mktemp)
    # the unit names /usr/bin (the package's); the prefix is written into it
    sed -e "s|/usr/bin/smartshop-broker|$PREFIX/bin/smartshop-broker|g" \
        "$SRC_DIR/packaging/$UNIT_NAME" >"$unit"
    install_conf "$unit" "$UNIT_DIR/$UNIT_NAME"
    rm -f "$unit"
}

create_user() {
    step "System user '$SERVICE_USER'"
    if [ -z "$DESTDIR" ] && getent passwd "$SERVICE_USER" >/dev/null; then
        say "    exists"
        return 0
    fi
    local args=(--system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin
        --comment "Smartshop message broker")
    if [ -z "$DESTDIR" ] && getent group "$SERVICE_USER" >/dev/null; then
        args+=(--gid "$SERVICE_USER")
    else
        args+=(--user-group)
    fi
    system useradd "${args[@]}" "$SERVICE_USER" || die "useradd $SERVICE_USER failed"
}

start_service() {
    step "Starting $UNIT_NAME"
    if [ -n "$DESTDIR" ]; then
        system systemctl daemon-reload
        [ "$do_start" = 1 ] && system systemctl enable --now "$UNIT_NAME"
        return 0
    fi
    if ! systemd_running; then
        say "    systemd is not running on this machine (a container?): the unit is installed"
        say "    but cannot be started here. To run the broker by hand:"
        say "      runuser -u $SERVICE_USER -- $PREFIX/bin/smartshop-broker --config $CONF_DIR/broker.lua"
        return 0
    fi
    system systemctl daemon-reload
    if [ "$do_start" = 0 ]; then
        say "    not enabled or started (--no-start): systemctl enable --now $UNIT_NAME"
        return 0
    fi
    system systemctl enable "$UNIT_NAME" || die "systemctl enable $UNIT_NAME failed"
    if systemctl is-active --quiet "$UNIT_NAME"; then
        system systemctl restart "$UNIT_NAME"     # the new binary and unit
    else
        system systemctl start "$UNIT_NAME" || true
    fi
    if ! systemctl is-active --quiet "$UNIT_NAME"; then
        systemctl status --no-pager --lines=20 "$UNIT_NAME" >&2 || true
        die "$UNIT_NAME did not start: journalctl -u smartshop-broker -n 50"
    fi
    if "$PREFIX/bin/smartshop-ctl" --timeout 3000 ping >/dev/null 2>&1; then
        say "    running, and answering: $PREFIX/bin/smartshop-ctl ping"
    else
        say "    running, but smartshop-ctl ping got no answer on the default endpoint"
        say "    (a different endpoint in $CONF_DIR/broker.lua? use --endpoint)"
    fi
}

# Files an earlier run installed that this version no longer ships.
remove_dropped() {
    local path
    for path in "${!old_kind[@]}"; do
        [ "${old_kind[$path]}" = dir ] && continue
        in_new_manifest "$path" && continue
        remove_entry "${old_kind[$path]}" "${old_sum[$path]}" "$path"
        # an edited conf stays, and stays recorded
        if [ "${old_kind[$path]}" = conf ] && [ -e "$DESTDIR$path" ]; then
            record conf "${old_sum[$path]}" "$path"
        fi
    done
}

do_install() {
    [ -f "$SRC_DIR/packaging/$UNIT_NAME" ] || die "packaging/$UNIT_NAME not found next to this script"
    read_manifest
    build
    create_user
    install_programs
    install_config
    install_unit
    remove_dropped
    keep_dirs
    write_manifest
    start_service
    step "Done"
    if [ "${#conf_kept[@]}" -gt 0 ]; then
        say "    edited files kept; compare them with their .dist:"
        local f
        for f in "${conf_kept[@]}"; do
            say "      diff $DESTDIR$f $DESTDIR$f.dist"
        done
    fi
    say "    status:  systemctl status smartshop-broker"
    say "    logs:    journalctl -u smartshop-broker -f"
    say "    try it:  smartshop-ctl services"
}

# --- uninstall ---

do_uninstall() {
    read_manifest
    step "Stopping and disabling $UNIT_NAME"
    if [ -n "$DESTDIR" ]; then
        system systemctl disable --now "$UNIT_NAME"
    elif systemd_running; then
        if systemctl cat "$UNIT_NAME" >/dev/null 2>&1; then
            system systemctl disable --now "$UNIT_NAME" || say "    (systemctl disable failed; continuing)"
        else
            say "    not installed in systemd"
        fi
    else
        say "    systemd is not running here: nothing to stop"
    fi

    step "Removing installed files"
    local path dirs=()
    if [ "${#old_kind[@]}" -eq 0 ]; then
        say "    no manifest ($DESTDIR$MANIFEST): removing the programs and the unit only"
        for path in "$PREFIX/bin/smartshop-broker" "$PREFIX/bin/smartshop-ctl" "$UNIT_DIR/$UNIT_NAME"; do
            remove_entry file - "$path"
        done
    else
        while IFS= read -r path; do
            if [ "${old_kind[$path]}" = dir ]; then
                dirs+=("$path")
            else
                remove_entry "${old_kind[$path]}" "${old_sum[$path]}" "$path"
            fi
        done < <(printf '%s\n' "${!old_kind[@]}" | sort)
        rm -f "$DESTDIR$MANIFEST"
        say "    removed $MANIFEST"
    fi
    if [ "$purge" = 1 ]; then
        if [ -d "$DESTDIR$CONF_DIR" ]; then
            rm -rf "$DESTDIR$CONF_DIR"
            say "    removed $CONF_DIR (--purge)"
        fi
        # the broker's state (the unit's StateDirectory=smartshop)
        for state in /var/lib/smartshop /var/lib/private/smartshop; do
            if [ -d "$DESTDIR$state" ]; then
                rm -rf "$DESTDIR$state"
                say "    removed $state (--purge)"
            fi
        done
    elif [ -d "$DESTDIR$CONF_DIR" ] && [ -n "$(find "$DESTDIR$CONF_DIR" -type f -print -quit)" ]; then
        say "    kept your edits in $CONF_DIR (--uninstall --purge removes them)"
    fi
    remove_dirs "${dirs[@]+"${dirs[@]}"}"

    if [ -z "$DESTDIR" ]; then
        systemd_running && system systemctl daemon-reload
        system ldconfig
    else
        system systemctl daemon-reload
        system ldconfig
    fi
    if [ "$purge" = 1 ]; then
        step "Removing the system user '$SERVICE_USER' (--purge)"
        if [ -n "$DESTDIR" ] || getent passwd "$SERVICE_USER" >/dev/null; then
            system userdel "$SERVICE_USER" || say "    userdel failed; remove it by hand"
        else
            say "    does not exist"
        fi
    fi
    step "Uninstalled"
}

# --- with dpkg: the Debian packages ---

ensure_make() {
    command -v make >/dev/null && return 0
    say "    installing make"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null; } ||
        die "cannot install make"
}

# the newest build of each package in DEB_DIR, one path a line
deb_files() {
    local p f
    for p in $PACKAGES; do
        # shellcheck disable=SC2012  # package file names are plain
        f=$(ls -t "$DEB_DIR/${p}_"*.deb 2>/dev/null | head -n 1)
        [ -n "$f" ] || die "$DEB_DIR has no ${p}_*.deb (drop --no-build, or run make deb)"
        echo "$f"
    done
}

installed_packages() {
    local p
    for p in $PACKAGES; do
        dpkg-query -W -f='${db:Status-Abbrev}\n' "$p" 2>/dev/null | grep -q '^.[ic]' && echo "$p"
    done
    return 0
}

dpkg_install() {
    if [ "$do_build" = 1 ]; then
        step "Building the Debian packages: make deb (into $DEB_DIR)"
        ensure_make
        mkdir -p "$DEB_DIR"
        local log=$DEB_DIR/install_broker.log
        make -C "$SRC_DIR" deb DEB_DIR="$DEB_DIR" JOBS="$JOBS" >"$log" 2>&1 || {
            tail -n 30 "$log" >&2
            die "make deb failed (full log: $log)"
        }
        say "    built: $PACKAGES (in $DEB_DIR)"
    else
        step "Using the packages in $DEB_DIR (--no-build)"
    fi
    local debs=()
    mapfile -t debs < <(deb_files)
    [ "${#debs[@]}" -gt 0 ] || exit 1
    if [ -f "$LEGACY_MANIFEST" ]; then
        step "Removing the install by hand under /usr/local (the packages replace it; edited configuration stays)"
        bash "$0" --no-dpkg --prefix /usr/local --uninstall | sed 's/^/    /'
    fi
    step "Installing with apt-get"
    # --reinstall: a rebuild of the same version replaces the programs too;
    # confdef/confold: no question asked, an edited conffile is kept and the
    # new version lands beside it as FILE.dpkg-dist
    system env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${debs[@]}" ||
        die "apt-get install failed"
    local kept
    kept=$(find "$CONF_DIR" -name '*.dpkg-dist' 2>/dev/null | sort)
    if [ -n "$kept" ]; then
        say "    edited files kept; compare them with the shipped versions:"
        local f
        for f in $kept; do say "      diff ${f%.dpkg-dist} $f"; done
    fi
    step "The service $UNIT_NAME"
    if ! systemd_running; then
        say "    systemd is not running on this machine (a container?): the unit is installed"
        say "    but cannot be started here. To run the broker by hand:"
        say "      runuser -u $SERVICE_USER -- /usr/bin/smartshop-broker --config $CONF_DIR/broker.lua"
    elif [ "$do_start" = 0 ]; then
        system systemctl disable --now "$UNIT_NAME"
        say "    not enabled or started (--no-start): systemctl enable --now $UNIT_NAME"
    else
        # the package's postinst has enabled it and (re)started it
        if ! systemctl is-active --quiet "$UNIT_NAME"; then
            system systemctl start "$UNIT_NAME" || true
        fi
        if ! systemctl is-active --quiet "$UNIT_NAME"; then
            systemctl status --no-pager --lines=20 "$UNIT_NAME" >&2 || true
            die "$UNIT_NAME did not start: journalctl -u smartshop-broker -n 50"
        fi
        if smartshop-ctl --timeout 3000 ping >/dev/null 2>&1; then
            say "    running, and answering: smartshop-ctl ping"
        else
            say "    running, but smartshop-ctl ping got no answer on the default endpoint"
            say "    (a different endpoint in $CONF_DIR/broker.lua? use --endpoint)"
        fi
    fi
    step "Done"
    say "    status:  systemctl status smartshop-broker"
    say "    logs:    journalctl -u smartshop-broker -f"
    say "    a service: cp /usr/share/doc/smartshop-broker/examples/services/echo.lua $CONF_DIR/services/"
    say "    try it:  smartshop-ctl services"
}

dpkg_uninstall() {
    local present=()
    mapfile -t present < <(installed_packages)
    if [ "${#present[@]}" -eq 0 ]; then
        step "No Smartshop package is installed"
    elif [ "$purge" = 1 ]; then
        step "Purging ${present[*]} (the configuration in $CONF_DIR and the user $SERVICE_USER too)"
        system env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${present[@]}" || die "apt-get purge failed"
    else
        step "Removing ${present[*]} (configuration stays; --uninstall --purge removes it)"
        system env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q "${present[@]}" || die "apt-get remove failed"
    fi
    if [ -f "$LEGACY_MANIFEST" ]; then
        step "Also removing the install by hand under /usr/local"
        local args=(--no-dpkg --prefix /usr/local --uninstall)
        [ "$purge" = 1 ] && args+=(--purge)
        bash "$0" "${args[@]}" | sed 's/^/    /'
    fi
    step "Uninstalled"
}

case $use_dpkg/$mode in
yes/install) dpkg_install ;;
yes/uninstall) dpkg_uninstall ;;
no/install) do_install ;;
no/uninstall) do_uninstall ;;
esac
