#!/usr/bin/env bash
# check-packages.sh - builds tensord's Debian packages, installs them, uses them, purges them,
# and checks that nothing is left. Run as root on a Debian 12 machine (CI runs it); it installs
# what it needs (debhelper, lintian, the build dependencies) itself.
#
#   1. tools: debhelper, lintian, ... and the build dependencies of debian/control;
#   2. build: `dpkg-buildpackage -b -us -uc` in a copy of the tree in a temporary directory (the
#      .debs go next to the copy, never into the source tree);
#   3. lintian on the .changes: no error and no warning (the kept ones are overridden in
#      debian/*.lintian-overrides, each with its reason);
#   4. install with apt (the .debs as files): the user and group tensord exist, /run/tensord
#      belongs to tensord, tensord.socket is enabled, /etc/tensord/tensord.conf is a conffile;
#      then again with --reinstall (the maintainer scripts of an upgrade), after an edit of the
#      configuration, which must stay;
#   5. a C program (tests/packages/consumer.c) built with `pkg-config --cflags --libs tensord`
#      against the installed libtensord-dev saves and loads every format and checks the values;
#   6. the installed daemon serves it: through tensord.socket where systemd runs, else tensord
#      started by hand as the user tensord on /run/tensord/tensord.sock;
#   7. the installed tensorctl lists and verifies the files, `tensord --help` answers;
#   8. purge every package (and anything step 4 pulled in);
#   9. nothing left: the listing of /usr, /etc and /var/lib (path, type, mode, owner) and the
#      dpkg status are as before step 4, the user, the group and /run/tensord are gone.
# One line per step; a failing step prints its whole log and the script exits 1. With
# TD_KEEP_TMP=1 the temporary directory (the tree, the .debs, every step's log) is kept.
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
pkgs=(tensord libtensord1 libtensord-dev python3-tensord)
# What building and checking the packages needs besides debian/control's Build-Depends.
tools=(build-essential dpkg-dev debhelper lintian pkg-config)

if [ "$(id -u)" -ne 0 ]; then
    echo "check-packages: run as root: it installs and purges packages" >&2
    exit 1
fi
for p in "${pkgs[@]}"; do
    if dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2> /dev/null | grep -q '^[a-z]i'; then
        echo "check-packages: $p is installed; this check installs and purges tensord's" \
            "packages itself: purge them first (apt-get purge ${pkgs[*]})" >&2
        exit 1
    fi
done

tmp=$(mktemp -d /tmp/td-check-packages.XXXXXX)
logs=$tmp/logs
mkdir -p "$logs"
installed=0
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2> /dev/null && wait "$daemon_pid" 2> /dev/null
    fi
    if [ "$installed" = 1 ]; then
        echo "check-packages: purging the packages after the failure"
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${purge_list[@]}" > /dev/null 2>&1
    fi
    if [ -n "${TD_KEEP_TMP:-}" ]; then
        echo "check-packages: kept $tmp (TD_KEEP_TMP)"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

# step NAME COMMAND...: runs the command with its output in a log; one line for the step, and
# the whole log when it fails.
nstep=0
step() {
    local name=$1
    shift
    nstep=$((nstep + 1))
    local log=$logs/$nstep.log s=$(date +%s)
    if "$@" > "$log" 2>&1; then
        local note=""
        [ -s "$logs/note" ] && note=": $(cat "$logs/note")"
        rm -f "$logs/note"
        printf 'check-packages: %-44s ok (%d s)%s\n' "$name" $(($(date +%s) - s)) "$note"
    else
        printf 'check-packages: %-44s FAILED (%d s); its log:\n' "$name" $(($(date +%s) - s))
        sed 's/^/    /' "$log"
        exit 1
    fi
}
# A short result for the step's line.
note() { echo "$*" > "$logs/note"; }

# ---- 1. tools and build dependencies -----------------------------------------------------------
copy_tree() {
    mkdir -p "$tmp/src"
    if git -C "$src" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
        # Tracked and new files as they are in the work tree (not the build directories).
        (cd "$src" && git ls-files -z -co --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            tar -cf - --null -T -) | tar -xf - -C "$tmp/src"
    else
        tar -C "$src" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -xf - -C "$tmp/src"
    fi
}
deps() {
    local missing=()
    for p in "${tools[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#missing[@]} -gt 0 ] || ! (cd "$tmp/src" && dpkg-checkbuilddeps); then
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${tools[@]}" &&
            apt-get build-dep -y -qq "$tmp/src"
    fi
    note "$(dpkg-query -W -f='${Version}' debhelper) debhelper, lintian $(dpkg-query -W -f='${Version}' lintian)"
}
step "copy the tree to $tmp/src" copy_tree
step "install build tools and dependencies" deps

# ---- 2. build ----------------------------------------------------------------------------------
build() {
    (cd "$tmp/src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") || return 1
    debs=()
    for p in "${pkgs[@]}"; do
        for f in "$tmp"/"${p}"_*.deb; do [ -e "$f" ] && debs+=("$f"); done
    done
    [ ${#debs[@]} -ge 3 ] || { echo "expected at least 3 packages, got: ${debs[*]}"; return 1; }
    note "$(cd "$tmp" && ls -- *.deb | grep -v dbgsym | tr '\n' ' ')"
}
step "dpkg-buildpackage -b -us -uc" build
debs=()
for p in "${pkgs[@]}"; do
    for f in "$tmp"/"${p}"_*.deb; do [ -e "$f" ] && debs+=("$f"); done
done
names=()
for f in "${debs[@]}"; do names+=("$(dpkg-deb -f "$f" Package)"); done

# ---- 3. lintian --------------------------------------------------------------------------------
run_lintian() {
    lintian --display-info --pedantic --show-overrides "$tmp"/*.changes > "$tmp/lintian.txt" 2>&1
    # (lintian says that it runs as root: that is this script's condition, not the packages'.)
    cat "$tmp/lintian.txt"
    local n=()
    for t in E W I P O; do n+=("$(grep -c "^$t: " "$tmp/lintian.txt")"); done
    note "${n[0]} errors, ${n[1]} warnings, ${n[2]} info, ${n[3]} pedantic, ${n[4]} overridden"
    [ "${n[0]}" -eq 0 ] && [ "${n[1]}" -eq 0 ]
}
step "lintian (no error, no unexplained warning)" run_lintian

# ---- 4. install ----------------------------------------------------------------------------------
# What /usr, /etc and /var/lib hold. Left out: the backups the account tools write of the file
# they change (/etc/passwd-, ...; they hold the previous version, here the tensord entries,
# until the next change), checked instead through the accounts themselves below.
listing() {
    find /usr /etc /var/lib -xdev \
        \( -path /etc/passwd- -o -path /etc/group- -o -path /etc/shadow- -o -path /etc/gshadow- \) \
        -prune -o -printf '%p %y %m %u:%g\n' | LC_ALL=C sort
}
dpkg_status() {
    dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package} ${Version}\n' | LC_ALL=C sort
}
listing > "$tmp/before.list"
dpkg_status > "$tmp/before.dpkg"
purge_list=("${names[@]}")
install() {
    installed=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${debs[@]}" ||
        return 1
    # Packages the install pulled in are purged with ours.
    dpkg_status > "$tmp/installed.dpkg"
    local p
    for p in $(LC_ALL=C comm -13 "$tmp/before.dpkg" "$tmp/installed.dpkg" | awk '{print $2}'); do
        case " ${names[*]} " in *" ${p%%:*} "*) ;; *) purge_list+=("$p") ;; esac
    done
    getent passwd tensord && getent group tensord || { echo "no user or group tensord"; return 1; }
    [ "$(stat -c %U:%G /run/tensord)" = tensord:tensord ] ||
        { echo "/run/tensord: $(stat -c %U:%G /run/tensord 2>&1)"; return 1; }
    dpkg-query -W -f='${Conffiles}\n' tensord | grep -q ' /etc/tensord/tensord.conf ' ||
        { echo "/etc/tensord/tensord.conf is not a conffile"; return 1; }
    [ "$(systemctl is-enabled tensord.socket)" = enabled ] ||
        { echo "tensord.socket is not enabled"; return 1; }
    local sd="systemd not running: socket enabled, not started"
    if [ -d /run/systemd/system ]; then
        systemctl is-active tensord.socket || { echo "tensord.socket is not active"; return 1; }
        sd="tensord.socket active"
    fi
    local extra=$((${#purge_list[@]} - ${#names[@]}))
    note "${names[*]}; user tensord, $sd; $extra other packages pulled in"
}
step "apt-get install the packages" install
# The maintainer scripts of an upgrade (prerm upgrade, postinst configure with the old version),
# with the configuration edited before: the edit stays.
reinstall() {
    echo "# edited by check-packages" >> /etc/tensord/tensord.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall "${debs[@]}" || return 1
    tail -n 1 /etc/tensord/tensord.conf | grep -q '^# edited by check-packages$' ||
        { echo "the edited /etc/tensord/tensord.conf was replaced"; return 1; }
    getent passwd tensord && [ "$(stat -c %U /run/tensord)" = tensord ] || return 1
    note "the edited conffile kept"
}
step "apt-get install --reinstall (an upgrade)" reinstall

# ---- 5, 6. a program against libtensord-dev, and the installed daemon -----------------------
consumer() {
    cc -std=c11 -Wall -Wextra -Werror -o "$tmp/consumer" "$src/tests/packages/consumer.c" \
        $(pkg-config --cflags --libs tensord) || return 1
    # The library it runs with is libtensord1's.
    local lib
    lib=$(ldd "$tmp/consumer" | sed -n 's/.*libtensord\.so\.1 => \(\S*\).*/\1/p')
    [ -n "$lib" ] && dpkg -S "$(readlink -f "$lib")" | grep -q '^libtensord1:' ||
        { ldd "$tmp/consumer"; return 1; }
    mkdir -p "$tmp/embedded"
    "$tmp/consumer" "$tmp/embedded" || return 1
    note "cc \$(pkg-config --cflags --libs tensord): 5 formats saved, loaded, checked"
}
step "build and run a program with pkg-config" consumer

daemon() {
    if [ -d /run/systemd/system ]; then
        how="socket activation (tensord.socket)"
    else
        # As the service would run it: the user tensord, the default socket in /run/tensord.
        setpriv --reuid=tensord --regid=tensord --init-groups /usr/sbin/tensord \
            > "$tmp/tensord.log" 2>&1 &
        daemon_pid=$!
        local i
        for i in $(seq 100); do
            [ -S /run/tensord/tensord.sock ] && break
            sleep 0.1
        done
        [ -S /run/tensord/tensord.sock ] || { cat "$tmp/tensord.log"; return 1; }
        how="tensord started by hand as the user tensord"
    fi
    mkdir -p "$tmp/daemon"
    "$tmp/consumer" "$tmp/daemon" | tee "$tmp/daemon.out" || return 1
    [ "$(grep -c 'through tensord' "$tmp/daemon.out")" -eq 5 ] ||
        { echo "not every load went through tensord"; return 1; }
    tensorctl status || return 1
    note "5 loads through $how"
}
step "the installed tensord serves the same loads" daemon
stop_daemon() {
    kill -TERM "$daemon_pid" && wait "$daemon_pid"
    local rc=$?
    daemon_pid=""
    cat "$tmp/tensord.log"
    [ "$rc" -eq 0 ]
}
[ -n "$daemon_pid" ] && step "tensord stops on SIGTERM with status 0" stop_daemon

# ---- 7. the installed programs -----------------------------------------------------------------
programs() {
    local f
    for f in "$tmp"/embedded/*; do
        tensorctl ls "$f" > /dev/null && tensorctl verify "$f" || return 1
    done
    tensorctl ls "$tmp/embedded/model-deflated.npz" | grep -q ' deflate$' || return 1
    tensord --help && tensord --version && tensorctl --help || return 1
    for f in man1/tensorctl.1 man3/libtensord.3 man8/tensord.8; do
        [ -s "/usr/share/man/$f.gz" ] || { echo "no /usr/share/man/$f.gz"; return 1; }
    done
    note "tensorctl ls and verify on $(ls "$tmp/embedded" | wc -l) files; tensord --help"
}
step "the installed tensorctl and tensord" programs
if [ -e "$tmp/src/python" ]; then
    step "/usr/bin/python3 -c 'import tensord'" /usr/bin/python3 -c 'import tensord'
fi

# ---- 8, 9. purge, and nothing left -------------------------------------------------------------
purge() {
    DEBIAN_FRONTEND=noninteractive apt-get purge -y "${purge_list[@]}" || return 1
    installed=0
}
step "apt-get purge the packages" purge
nothing_left() {
    listing > "$tmp/after.list"
    dpkg_status > "$tmp/after.dpkg"
    local ok=0
    diff -u "$tmp/before.list" "$tmp/after.list" || { echo "files differ (above)"; ok=1; }
    diff -u "$tmp/before.dpkg" "$tmp/after.dpkg" || { echo "dpkg status differs (above)"; ok=1; }
    if getent passwd tensord || getent group tensord; then
        echo "the user or group tensord is still there"
        ok=1
    fi
    if grep -q '^tensord:' /etc/passwd /etc/group /etc/shadow /etc/gshadow; then
        echo "tensord is still in the account files"
        ok=1
    fi
    [ ! -e /run/tensord ] || { echo "/run/tensord is still there"; ok=1; }
    [ ! -e /etc/tensord ] || { echo "/etc/tensord is still there"; ok=1; }
    note "$(wc -l < "$tmp/after.list") paths and $(wc -l < "$tmp/after.dpkg") packages as before"
    return $ok
}
step "nothing left behind" nothing_left
echo "check-packages: all $nstep steps passed in $(($(date +%s) - t0)) s"
