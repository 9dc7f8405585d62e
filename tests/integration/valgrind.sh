#!/usr/bin/env bash
# valgrind.sh - the daemon and its clients under valgrind memcheck.
#
# Starts tensord under memcheck, runs two rounds of client loads through it (td_demo load, also
# under memcheck: the first round parses and decodes in the daemon, the second is served from
# its cache), asks for its status with tensorctl, and stops it with SIGTERM. Every process must
# exit 0 with no memcheck error and no definite or indirect leak (--error-exitcode=1
# --leak-check=full --errors-for-leak-kinds=definite,indirect). The files cover every decode
# path the daemon has: a deflated npz, a big-endian and a Fortran-order npy, stored npz members,
# safetensors and a quantized gguf.
#
# Environment (set by ctest): TD_BUILD_DIR, TD_TESTDATA. A build with ASan cannot run under
# valgrind: tests/CMakeLists.txt does not register this test in sanitizer builds, and run by hand
# there it exits 77 (skipped). TD_VALGRIND_LOG=DIR keeps the logs.
set -u -o pipefail

build=${TD_BUILD_DIR:?TD_BUILD_DIR is not set}
td=${TD_TESTDATA:?TD_TESTDATA is not set}
daemon=$build/daemon/tensord
demo=$build/td_demo
ctl=$build/tensorctl

if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: valgrind is not installed (Debian: apt-get install valgrind)" >&2
    exit 1
fi
for b in "$daemon" "$demo" "$ctl"; do
    [ -x "$b" ] || { echo "valgrind.sh: $b is not built" >&2; exit 1; }
done
# (grep without -q reads all of nm's output: with pipefail, an early exit would SIGPIPE nm.)
if { nm -D "$daemon"; nm "$daemon"; } 2>/dev/null | grep __asan_init >/dev/null; then
    echo "SKIP: valgrind.sh: $build is an ASan build; memcheck cannot run it"
    exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tdvg-XXXXXX")
logs=${TD_VALGRIND_LOG:-$work}
mkdir -p "$logs"
sock=$work/tensord.sock
dpid=
cleanup() {
    [ -n "$dpid" ] && kill -KILL "$dpid" 2>/dev/null
    [ -z "${TD_VALGRIND_LOG:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

vg=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
    --track-fds=no --num-callers=30 --trace-children=no)

fail=0
note() { echo "valgrind.sh: $*"; }
bad() {
    echo "valgrind.sh: FAIL: $*" >&2
    fail=1
}

# Files: a few the demo writes, and reference files that take the daemon's decode paths.
"$demo" save "$work" >/dev/null || { bad "td_demo save failed"; exit 1; }
files=("$work/deflated.npz" "$work/stored.npz" "$work/model.safetensors" "$work/model.gguf"
    "$td/npy/big_endian_f4.npy" "$td/npy/fortran_f8.npy" "$td/npz/compressed.npz"
    "$td/gguf/q4_0.gguf")

start=$(date +%s)
"${vg[@]}" --log-file="$logs/daemon.vg" "$daemon" --socket "$sock" --log-level info \
    2>"$logs/daemon.log" &
dpid=$!
# memcheck starts slowly: wait for the socket to answer.
up=0
for _ in $(seq 1 300); do
    if TENSORD_SOCKET=$sock "$ctl" status >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.1
done
[ $up -eq 1 ] || { bad "tensord under valgrind did not come up"; cat "$logs/daemon.log" "$logs/daemon.vg" >&2; exit 1; }
note "tensord up under memcheck after $(($(date +%s) - start)) s"

for round in 1 2; do
    out=$logs/client$round.out
    if ! TENSORD_SOCKET=$sock "${vg[@]}" --log-file="$logs/client$round.vg" "$demo" load \
        "${files[@]}" >"$out" 2>&1; then
        bad "client round $round: td_demo load failed or memcheck found errors ($logs/client$round.vg)"
        cat "$out" "$logs/client$round.vg" >&2
    fi
    if grep -q "loaded in this process" "$out"; then
        bad "client round $round: some files were not loaded through the daemon"
        grep "loaded in this process" "$out" >&2
    fi
done
if ! TENSORD_SOCKET=$sock "${vg[@]}" --log-file="$logs/ctl.vg" "$ctl" status >"$logs/status.out" 2>&1; then
    bad "tensorctl status failed or memcheck found errors ($logs/ctl.vg)"
    cat "$logs/status.out" "$logs/ctl.vg" >&2
fi

kill -TERM "$dpid"
wait "$dpid"
drc=$?
dpid=
if [ $drc -ne 0 ]; then
    bad "tensord exited $drc under memcheck"
    cat "$logs/daemon.vg" >&2
    tail -20 "$logs/daemon.log" >&2
fi
for f in "$logs"/*.vg; do
    summary=$(grep -E "ERROR SUMMARY|in use at exit|definitely lost|indirectly lost" "$f" | sed 's/^==[0-9]*== *//' | tr '\n' ' ')
    note "$(basename "$f" .vg): $summary"
done
note "done in $(($(date +%s) - start)) s"
exit $fail
