#!/usr/bin/env bash
# packaging.sh - does tensord ship? Run by ctest (tests/integration/*.sh) in the build's
# environment (TD_BUILD_DIR, TD_SOURCE_DIR, TD_PYTHON); by hand:
#     TD_BUILD_DIR=build bash tests/integration/packaging.sh
#
#  1. install: `cmake --install` into a DESTDIR puts every file where it belongs, and the
#     library has its versioned soname;
#  2. units: `systemd-analyze verify` passes, without a single warning, on the installed units;
#     the unit's SystemCallFilter allows what the daemon calls (memfd_create, mlock, sendmsg,
#     ...); `systemd-analyze security` rates its exposure at most 1.0; the sysusers.d and
#     tmpfiles.d snippets apply to a scratch root; the installed configuration file, every
#     setting uncommented, is accepted by the daemon;
#  3. socket activation: `systemd-socket-activate -l SOCK tensord` serves a LOAD on the socket
#     it inherits (and binds none of its own);
#  4. notify: systemd_notify.py plays NOTIFY_SOCKET: READY=1, then STOPPING=1 on SIGTERM, exit 0;
#  5. consumers: two C programs built against the DESTDIR tree only, one with
#     `pkg-config --cflags --libs tensord` (and one with --static), one with CMake's
#     find_package(tensord) (shared, and the static component), each save and load a file;
#  6. man: libtensord(3) describes every function of tensord.h; `man -l` renders each installed
#     page without a warning.
# A check whose tool is not installed at all is skipped with a loud SKIP line; every other
# problem is a FAIL. Any FAIL makes the script exit 1; otherwise any SKIP makes it exit 77,
# which ctest counts as skipped (scripts/install-deps.sh installs every tool used here).
set -uo pipefail

src=${TD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TD_BUILD_DIR:?TD_BUILD_DIR must name a configured and built build directory}
build=$(cd "$build" && pwd)
python=${TD_PYTHON:-/usr/bin/python3}
t0=$(date +%s%N)

npass=0
nfail=0
nskip=0
pass() { echo "PASS: $*"; npass=$((npass + 1)); }
fail() { echo "FAIL: $*"; nfail=$((nfail + 1)); }
skip() {
    echo "SKIP: ==================================================================="
    echo "SKIP: $*"
    echo "SKIP: ==================================================================="
    nskip=$((nskip + 1))
}
have() { command -v "$1" >/dev/null 2>&1; }
section() { echo "== $* (at $((($(date +%s%N) - t0) / 1000000)) ms)"; }
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -n 1; }

tmp=$(mktemp -d /tmp/td-packaging.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- 1. install into a DESTDIR ----------------------------------------------------------------
section "install into a DESTDIR"
dest=$tmp/dest
prefix=$(cache CMAKE_INSTALL_PREFIX)
libdir=$(cache CMAKE_INSTALL_LIBDIR)
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
sbindir=$(cache CMAKE_INSTALL_SBINDIR)
case $sbindir in /*) ;; *) sbindir=$prefix/$sbindir ;; esac
bindir=$(cache CMAKE_INSTALL_BINDIR)
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac
unitdir=$(cache TD_SYSTEMD_UNITDIR)
sysusersdir=$(cache TD_SYSUSERSDIR)
tmpfilesdir=$(cache TD_TMPFILESDIR)
sanitize=$(cache TD_SANITIZE)
case $sanitize in OFF | NO | FALSE | 0) sanitize="" ;; esac
cc=$(cache CMAKE_C_COMPILER)
[ -n "$cc" ] || cc=cc
scdoc_found=$(cache TD_SCDOC)
# GNUInstallDirs leaves an empty MANDIR in the cache when it is the default, DATAROOTDIR/man.
mandir=$(cache CMAKE_INSTALL_MANDIR)
[ -n "$mandir" ] || mandir=$(cache CMAKE_INSTALL_DATAROOTDIR)
[ -n "$mandir" ] || mandir=share
[ -n "$(cache CMAKE_INSTALL_MANDIR)" ] || mandir=$mandir/man
case $mandir in /*) ;; *) mandir=$prefix/$mandir ;; esac

if ! DESTDIR=$dest cmake --install "$build" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    fail "cmake --install into DESTDIR"
    echo "$npass passed, $nfail failed, $nskip skipped"
    exit 1
fi
D=$dest
missing=()
expect=("$D$bindir/tensorctl" "$D$sbindir/tensord" "$D$libdir/libtensord.so"
        "$D$libdir/libtensord.so.$(cache TD_SOVERSION)" "$D$libdir/libtensord.a"
        "$D$libdir/pkgconfig/tensord.pc"
        "$D$libdir/cmake/tensord/tensordConfig.cmake"
        "$D$libdir/cmake/tensord/tensordConfigVersion.cmake"
        "$D$unitdir/tensord.service" "$D$unitdir/tensord.socket"
        "$D$sysusersdir/tensord.conf" "$D$tmpfilesdir/tensord.conf")
for f in "${expect[@]}"; do [ -e "$f" ] || missing+=("$f"); done
[ -n "$(find "$D" -path '*/include/tensord.h')" ] || missing+=("include/tensord.h")
conf=$(find "$D" -path '*/tensord/tensord.conf' | head -n 1)
[ -n "$conf" ] || missing+=("etc/tensord/tensord.conf")
if [ ${#missing[@]} -eq 0 ]; then
    pass "install: $(find "$D" -type f | wc -l) files under DESTDIR (prefix $prefix)"
else
    fail "install: missing ${missing[*]}"
fi
soname=$(readelf -d "$D$libdir/libtensord.so" 2>/dev/null | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
sover=$(cache TD_SOVERSION)
if [ -n "$sover" ] && [ "$soname" = "libtensord.so.$sover" ] && [ -L "$D$libdir/libtensord.so" ] &&
    [ "$(readlink "$D$libdir/libtensord.so.$sover")" = "libtensord.so.$(cache CMAKE_PROJECT_VERSION)" ]; then
    pass "install: soname $soname, libtensord.so -> $(readlink "$D$libdir/libtensord.so")"
else
    fail "install: soname '$soname' (want libtensord.so.$sover with versioned symlinks)"
fi
if readelf -d "$D$sbindir/tensord" "$D$bindir/tensorctl" 2>/dev/null | grep -q 'R.*PATH.*'"$build"; then
    fail "install: installed programs keep an RPATH into the build tree"
fi
daemon=$D$sbindir/tensord
tensorctl=$D$bindir/tensorctl
# The installed tensorctl links libtensord.so; the DESTDIR's is the one to run with.
export LD_LIBRARY_PATH=$D$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- 2. units, snippets, configuration --------------------------------------------------------
section "units, snippets, configuration"
if have systemd-analyze; then
    # ExecStart names the installed path, which exists only under DESTDIR: verify a copy whose
    # ExecStart points there (nothing else changed); man pages from the DESTDIR too.
    mkdir -p "$tmp/units"
    cp "$D$unitdir/tensord.service" "$D$unitdir/tensord.socket" "$tmp/units/"
    sed -i "s#^ExecStart=$sbindir/#ExecStart=$D$sbindir/#" "$tmp/units/tensord.service"
    grep -q "^ExecStart=$D" "$tmp/units/tensord.service" ||
        fail "verify: ExecStart of tensord.service is not $sbindir/tensord"
    manpath=$D$mandir
    verify_man=--man=yes
    if [ -z "$scdoc_found" ] || [ "$scdoc_found" = TD_SCDOC-NOTFOUND ] || ! have man; then
        verify_man=--man=no
        skip "systemd-analyze verify: Documentation= not checked (scdoc or man not installed)"
    fi
    if MANPATH=$manpath SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$verify_man" \
        "$tmp/units/tensord.socket" "$tmp/units/tensord.service" >"$tmp/verify.log" 2>&1 &&
        [ ! -s "$tmp/verify.log" ]; then
        pass "systemd-analyze verify tensord.socket tensord.service: clean"
    else
        cat "$tmp/verify.log"
        fail "systemd-analyze verify printed the above"
    fi
    # The system call filter of the installed unit allows what the daemon calls: memfd_create
    # (derived buffers, snapshots), mlock (pin), sendmsg/recvmsg with SCM_RIGHTS, inotify,
    # readlink of /proc/self/fd, the event loop and its thread pool.
    # Every group, listed once; then expanded in awk.
    systemd-analyze syscall-filter --no-pager >"$tmp/groups" 2>/dev/null
    sc_expand() {
        awk -v want="$*" '
            /^@/ { g = $1; next }
            /^    [^#]/ && g != "" { n[g]++; m[g, n[g]] = $1 }
            /^$/ { g = "" }
            function out(x,   i) {
                if (x !~ /^@/) { print x; return }
                if (seen[x]++) return
                for (i = 1; i <= n[x]; i++) out(m[x, i])
            }
            END { k = split(want, w, " "); for (j = 1; j <= k; j++) out(w[j]) }
        ' "$tmp/groups"
    }
    allow=()
    deny=()
    while IFS= read -r line; do
        for item in ${line#SystemCallFilter=}; do
            case $item in "~"*) deny+=("${item#"~"}") ;; *) allow+=("$item") ;; esac
        done
    done < <(grep '^SystemCallFilter=' "$D$unitdir/tensord.service")
    sc_expand "${allow[@]}" | sort -u >"$tmp/allow"
    sc_expand "${deny[@]}" | sort -u >"$tmp/deny"
    blocked=()
    for call in memfd_create ftruncate mmap munmap madvise mlock munlock fcntl pread64 sendmsg \
        recvmsg accept4 getsockopt socket bind listen connect chmod unlink readlink \
        inotify_init1 inotify_add_watch inotify_rm_watch epoll_create1 epoll_ctl epoll_wait \
        epoll_pwait eventfd2 rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack clone3 futex \
        newfstatat fstat statx openat close read write writev kill getpid gettid exit_group; do
        if ! grep -qx "$call" "$tmp/allow" || grep -qx "$call" "$tmp/deny"; then
            blocked+=("$call")
        fi
    done
    if [ ! -s "$tmp/allow" ]; then
        fail "SystemCallFilter: tensord.service has none, or systemd-analyze syscall-filter failed"
    elif [ ${#blocked[@]} -eq 0 ]; then
        pass "SystemCallFilter: $(sort -u "$tmp/allow" | wc -l) calls allowed, $(sort -u "$tmp/deny" | wc -l) denied; memfd_create, mlock, sendmsg, recvmsg, inotify and the rest allowed"
    else
        fail "SystemCallFilter blocks what the daemon calls: ${blocked[*]}"
    fi
    # The sandbox stays tight: systemd's own exposure score (0 best, 10 worst) at most 1.0.
    if systemd-analyze security --offline=yes --threshold=10 "$tmp/units/tensord.service" \
        >"$tmp/security.log" 2>&1; then
        pass "systemd-analyze security: $(grep -o 'exposure level.*' "$tmp/security.log")"
    else
        grep -v '✓' "$tmp/security.log"
        fail "systemd-analyze security: exposure above 1.0"
    fi
    # The socket is where clients look, and only root and the group may connect.
    sock_unit=$D$unitdir/tensord.socket
    if grep -qx 'ListenStream=/run/tensord/tensord.sock' "$sock_unit" &&
        grep -qx 'SocketMode=0660' "$sock_unit" && grep -qx 'SocketGroup=tensord' "$sock_unit"; then
        pass "tensord.socket: /run/tensord/tensord.sock, 0660, group tensord"
    else
        fail "tensord.socket: ListenStream/SocketMode/SocketGroup are not as documented"
    fi
else
    skip "systemd-analyze verify (systemd-analyze is not installed: apt-get install systemd)"
fi

if have systemd-sysusers && have systemd-tmpfiles; then
    root=$tmp/sysroot
    mkdir -p "$root/etc" "$root/run"
    if systemd-sysusers --root="$root" "$D$sysusersdir/tensord.conf" >"$tmp/sysusers.log" 2>&1 &&
        grep -q '^tensord:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$\|^tensord:x:[0-9]*:[0-9]*:.*:/sbin/nologin$' \
            "$root/etc/passwd" && grep -q '^tensord:x:' "$root/etc/group"; then
        pass "sysusers.d: creates user and group tensord ($(grep '^tensord:' "$root/etc/passwd"))"
    else
        cat "$tmp/sysusers.log" "$root/etc/passwd" 2>/dev/null
        fail "sysusers.d snippet"
    fi
    if systemd-tmpfiles --root="$root" --create "$D$tmpfilesdir/tensord.conf" >"$tmp/tmpfiles.log" 2>&1 &&
        [ -d "$root/run/tensord" ] &&
        [ "$(stat -c %a "$root/run/tensord")" = 755 ]; then
        pass "tmpfiles.d: creates /run/tensord"
    else
        cat "$tmp/tmpfiles.log"
        fail "tmpfiles.d snippet"
    fi
else
    skip "sysusers.d/tmpfiles.d snippets (systemd-sysusers/systemd-tmpfiles not installed)"
fi

# The documented configuration: every "#key = value" line uncommented must be accepted.
if [ -n "$conf" ]; then
    sed -E 's/^#(max_|idle_|log_|mode |preload )/\1/' "$conf" >"$tmp/all.conf"
    nset=$(grep -cE '^(max_|idle_|log_|mode |preload )' "$tmp/all.conf")
    for key in max_memory max_inflated max_clients max_frame max_leases max_entries \
        idle_timeout log_level; do
        grep -q "^$key = " "$tmp/all.conf" || fail "tensord.conf does not document $key"
    done
    grep -q "^preload /" "$tmp/all.conf" || fail "tensord.conf does not document preload"
    # The notify harness starts it, waits for READY=1 and stops it: started means accepted.
    if "$python" "$src/tests/integration/systemd_notify.py" "$daemon" --config "$tmp/all.conf" \
        >"$tmp/conf.log" 2>&1; then
        pass "tensord.conf: the daemon accepts all $nset documented settings"
    else
        cat "$tmp/conf.log"
        fail "tensord.conf with every setting uncommented is refused"
    fi
fi

# ---- 3. socket activation ---------------------------------------------------------------------
section "socket activation"
demo=$build/td_demo
mkdir -p "$tmp/data"
if have systemd-socket-activate; then
    sa_sock=$tmp/sa.sock
    # The daemon must serve the inherited socket, not bind $TENSORD_SOCKET.
    TENSORD_SOCKET=$tmp/wrong.sock systemd-socket-activate -l "$sa_sock" "$daemon" \
        --log-level debug >"$tmp/sa.log" 2>&1 &
    sapid=$!
    pids+=("$sapid")
    for _ in $(seq 50); do [ -S "$sa_sock" ] && break; sleep 0.1; done
    # Files to load, saved by the library (td_demo save writes every format).
    "$demo" save "$tmp/data" >/dev/null || fail "socket activation: $demo save"
    file=$tmp/data/model.safetensors
    load_out=$(timeout 30 "$tensorctl" --socket "$sa_sock" load "$file" 2>&1)
    load_rc=$?
    status_out=$(timeout 30 "$tensorctl" --socket "$sa_sock" status --json 2>&1)
    demo_out=$(TENSORD_SOCKET=$sa_sock timeout 30 "$demo" load "$file" 2>&1)
    sleep 0.2
    if [ $load_rc -eq 0 ] && grep -q "serving the socket systemd passed" "$tmp/sa.log" &&
        grep -q "load $file: lease" "$tmp/sa.log" && [ ! -e "$tmp/wrong.sock" ] &&
        printf '%s' "$status_out" | grep -q "\"file\": \"$file\""; then
        pass "socket activation: LOAD served on the inherited socket ($(grep -c ': lease' "$tmp/sa.log") leases logged)"
    else
        echo "tensorctl load (rc $load_rc): $load_out"
        echo "tensorctl status --json: $status_out"
        echo "daemon log:"
        cat "$tmp/sa.log"
        fail "socket activation"
    fi
    if printf '%s' "$demo_out" | grep -q "shared by tensord"; then
        pass "socket activation: td_demo (td_load, auto mode) got views of the daemon's buffers"
    else
        echo "$demo_out"
        fail "socket activation: td_demo did not load through the daemon"
    fi
    kill -TERM "$sapid" 2>/dev/null
    wait "$sapid"
    rc=$?
    if [ $rc -eq 0 ]; then
        pass "socket activation: the daemon exits 0 on SIGTERM"
    else
        cat "$tmp/sa.log"
        fail "socket activation: exit status $rc after SIGTERM"
    fi
else
    skip "socket activation (systemd-socket-activate is not installed: apt-get install systemd)"
fi

# ---- 4. NOTIFY_SOCKET -------------------------------------------------------------------------
section "NOTIFY_SOCKET"
if [ -x "$python" ] || have "$python"; then
    if "$python" "$src/tests/integration/systemd_notify.py" "$daemon" >"$tmp/notify.log" 2>&1; then
        pass "notify: READY=1, STATUS=, STOPPING=1 on SIGTERM, exit 0"
    else
        cat "$tmp/notify.log"
        fail "notify harness"
    fi
else
    skip "notify harness ($python is not installed)"
fi

# ---- 5. external consumers --------------------------------------------------------------------
section "external consumers"
san_flags=()
[ -n "$sanitize" ] && san_flags=(-fsanitize="$sanitize" -fno-omit-frame-pointer)
cat >"$tmp/consumer.c" <<'EOF'
/* An outside program: save a float32 matrix as .npy and a dict with metadata as .safetensors,
 * load both back in this process, compare. Prints "OK" and exits 0 when all is as saved. */
#include <tensord.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, const td_error *err)
{
    fprintf(stderr, "%s: %s (%s)\n", what, err->message, td_err_name(err->code));
    return 1;
}

int main(int argc, char **argv)
{
    char npy[4096], st[4096];
    if (argc != 2)
        return 2;
    snprintf(npy, sizeof npy, "%s.npy", argv[1]);
    snprintf(st, sizeof st, "%s.safetensors", argv[1]);
    float v[6] = {1.5f, -2.0f, 3.25f, 0.0f, 5.0f, -6.5f};
    int64_t shape[2] = {2, 3};
    td_error err = {0};
    td_array *a = NULL, *b = NULL;
    td_dict *d = td_dict_new(), *back = NULL;
    td_meta *m = td_meta_new(), *mback = NULL;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    if (!d || !m)
        return 1;
    if (td_array_new(TD_FLOAT32, 2, shape, v, &a, &err) || td_save(npy, a, &err))
        return fail("save npy", &err);
    if (td_dict_set(d, "w", a, &err) || td_meta_set_string(m, "who", "consumer", 8, &err) ||
        td_save_safetensors(st, d, m, &err))
        return fail("save safetensors", &err);
    if (td_load_array(npy, &opt, &b, &err))
        return fail("load npy", &err);
    if (td_load(st, &opt, &back, &mback, &err))
        return fail("load safetensors", &err);
    const td_array *w = td_dict_get(back, "w");
    const char *who;
    size_t len;
    if (td_array_dtype(b) != TD_FLOAT32 || td_array_ndim(b) != 2 || td_array_shape(b)[1] != 3 ||
        td_array_nbytes(b) != sizeof v || memcmp(td_array_data(b), v, sizeof v) != 0 || !w ||
        memcmp(td_array_data(w), v, sizeof v) != 0 ||
        td_meta_get_string(mback, "who", &who, &len) || len != 8 || memcmp(who, "consumer", 8)) {
        fprintf(stderr, "loaded arrays differ from the saved ones\n");
        return 1;
    }
    printf("OK libtensord %s, %s provenance %d\n", td_version_string(),
           td_version() == TD_VERSION_HEX ? "header matches" : "HEADER MISMATCH",
           (int)td_array_provenance(b));
    td_array_release(a);
    td_array_release(b);
    td_dict_free(d);
    td_dict_free(back);
    td_meta_free(m);
    td_meta_free(mback);
    return td_version() == TD_VERSION_HEX ? 0 : 1;
}
EOF
# run NAME PROGRAM: the program must print OK and use the DESTDIR's libtensord (or none).
run_consumer() {
    local name=$1 prog=$2 out
    if ! out=$("$prog" "$tmp/data/$name" 2>&1); then
        echo "$out"
        fail "$name: the program failed"
        return
    fi
    case $out in OK*) ;; *) echo "$out"; fail "$name: unexpected output"; return ;; esac
    local lib
    lib=$(ldd "$prog" 2>/dev/null | sed -n 's/.*libtensord\.so[^ ]* => \([^ ]*\).*/\1/p')
    if [ -n "$lib" ] && [ "${lib#"$D"}" = "$lib" ]; then
        fail "$name: runs with $lib, not the DESTDIR's library"
        return
    fi
    pass "$name: ${out} (${lib:-static})"
}

if have pkg-config; then
    # The .pc names the real prefix; the sysroot puts the DESTDIR in front of its paths.
    pc() { PKG_CONFIG_PATH=$D$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D pkg-config "$@"; }
    if flags=$(pc --cflags --libs tensord) && static_flags=$(pc --static --cflags --libs tensord) &&
        [ "$(pc --modversion tensord)" = "$(cache CMAKE_PROJECT_VERSION)" ] &&
        pc --print-requires-private tensord | grep -q msgpack; then
        # shellcheck disable=SC2086
        if "$cc" -std=c11 -Wall -Wextra -Werror "${san_flags[@]}" "$tmp/consumer.c" \
            -o "$tmp/pc_shared" $flags >"$tmp/cc.log" 2>&1; then
            run_consumer pc_shared "$tmp/pc_shared"
        else
            cat "$tmp/cc.log"
            fail "pkg-config --cflags --libs tensord: the program does not build ($flags)"
        fi
        # --static: libtensord.a, then what Requires.private and Libs.private name.
        static_flags=${static_flags/-ltensord/-l:libtensord.a}
        # shellcheck disable=SC2086
        if "$cc" -std=c11 -Wall -Wextra -Werror "${san_flags[@]}" "$tmp/consumer.c" \
            -o "$tmp/pc_static" $static_flags >"$tmp/cc.log" 2>&1; then
            run_consumer pc_static "$tmp/pc_static"
        else
            cat "$tmp/cc.log"
            fail "pkg-config --static --libs tensord: the program does not link ($static_flags)"
        fi
    else
        pc --cflags --libs tensord
        fail "pkg-config tensord (PKG_CONFIG_PATH into the DESTDIR)"
    fi
else
    skip "pkg-config consumer (pkg-config is not installed: apt-get install pkg-config)"
fi

mkdir -p "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES C)
find_package(tensord 0.1 REQUIRED)
find_package(tensord 0.1 REQUIRED COMPONENTS static)
add_executable(cm_shared consumer.c)
target_link_libraries(cm_shared PRIVATE tensord::tensord)
add_executable(cm_static consumer.c)
target_link_libraries(cm_static PRIVATE tensord::tensord_static)
foreach(t cm_shared cm_static)
  target_compile_options(${t} PRIVATE -Wall -Wextra -Werror)
endforeach()
EOF
cp "$tmp/consumer.c" "$tmp/cm/"
if cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$D$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="${san_flags[*]}" >"$tmp/cm.log" 2>&1 &&
    cmake --build "$tmp/cm/build" --parallel 2 >>"$tmp/cm.log" 2>&1; then
    if grep -q "tensord_DIR:PATH=$D" "$tmp/cm/build/CMakeCache.txt"; then
        run_consumer cmake_shared "$tmp/cm/build/cm_shared"
        run_consumer cmake_static "$tmp/cm/build/cm_static"
    else
        grep tensord_DIR "$tmp/cm/build/CMakeCache.txt"
        fail "find_package(tensord) found a package outside the DESTDIR"
    fi
else
    cat "$tmp/cm.log"
    fail "find_package(tensord): the program does not configure or build"
fi

# ---- 6. man pages -----------------------------------------------------------------------------
section "man pages"
# libtensord(3) covers the whole API: every function tensord.h exports is described there.
api=$(sed -n 's/^TD_EXTERN[^(]*[ *]\(td_[a-z0-9_]*\)(.*/\1/p' "$src/include/tensord.h" | sort -u)
undocumented=()
for fn in $api; do
    # A signature: the name right before "(" (prose writes *name*()).
    grep -qE "[ *]$fn\(" "$src/man/libtensord.3.scd" || undocumented+=("$fn")
done
if [ -z "$api" ]; then
    fail "man: no TD_EXTERN function found in include/tensord.h"
elif [ ${#undocumented[@]} -eq 0 ]; then
    pass "man: libtensord(3) describes all $(echo "$api" | wc -w) functions of tensord.h"
else
    fail "man: libtensord(3) does not describe ${undocumented[*]}"
fi
if [ -z "$scdoc_found" ] || [ "$scdoc_found" = TD_SCDOC-NOTFOUND ]; then
    skip "man pages were not built (scdoc is not installed: apt-get install scdoc)"
elif ! have man; then
    skip "man -l (man is not installed: apt-get install man-db)"
else
    for page in man8/tensord.8 man1/tensorctl.1 man3/libtensord.3; do
        f=$D$mandir/$page
        if [ ! -s "$f" ]; then
            fail "man: $page is not installed"
            continue
        fi
        if MANWIDTH=80 man -l --warnings "$f" >"$tmp/man.out" 2>"$tmp/man.err" &&
            [ ! -s "$tmp/man.err" ] && [ "$(wc -l <"$tmp/man.out")" -gt 20 ]; then
            pass "man -l --warnings $page: $(wc -l <"$tmp/man.out") lines, no warning"
        else
            cat "$tmp/man.err"
            fail "man -l $page"
        fi
    done
fi

echo "packaging checks took $((($(date +%s%N) - t0) / 1000000)) ms"
echo "$npass passed, $nfail failed, $nskip skipped"
[ $nfail -eq 0 ] || exit 1
[ $nskip -eq 0 ] || exit 77
