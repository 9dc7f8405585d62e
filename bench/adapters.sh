#!/bin/bash
# bench/adapters.sh - many small models: worker processes that load and drop small safetensors
# adapters at random (bench/bench_adapters.c), embedded against the daemon, as a markdown table.
#
#   bench/adapters.sh [--build DIR] [--dir DIR] [--count N] [--procs N] [--seconds S]
#                     [--runs N] [--hold K]
#
#   --build    the Release build directory with -DTD_BENCH=ON (default SOURCE/build-bench); this
#              script builds nothing
#   --dir      where the adapters go (default BUILD/bench-data/adapters); they are kept for the
#              next run (files already there with the right size are not written again)
#   --count    adapters (default 1000; 64 tensors, 4 MiB each)
#   --procs    worker processes (default 8)
#   --seconds  of each timed run (default 5)
#   --runs     runs of each mode, interleaved (default 3); the table gives their medians
#   --hold     loads each worker keeps alive (default 0)
#
# Starts its own tensord (TENSORD_BENCH_DAEMON, else BUILD/daemon/tensord) on a private socket
# in a temporary directory, with --log-level notice and a configuration that lets its cache
# hold every adapter (max_entries); runs the modes embedded, daemon (td_load, a connection per
# load) and client (td_client_load on one td_client per worker) in turn; stops the daemon and
# removes the temporary directory, nothing else. Each run first warms up: the workers load every
# adapter once between them, untimed, so that the page cache and the daemon's cache are warm.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$SRC/build-bench
DATA=
COUNT=1000
PROCS=8
SECS=5
RUNS=3
HOLD=0

while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift ;;
    --dir) DATA=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --procs) PROCS=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "adapters.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
DATA=${DATA:-$BUILD/bench-data/adapters}
BENCH=$BUILD/bench/bench_adapters
DAEMON=${TENSORD_BENCH_DAEMON:-$BUILD/daemon/tensord}
for f in "$BENCH" "$DAEMON"; do
    if [ ! -x "$f" ]; then
        echo "adapters.sh: $f is missing; build first:" >&2
        echo "  cmake -S $SRC -B $BUILD -DCMAKE_BUILD_TYPE=Release -DTD_BENCH=ON &&" \
            "cmake --build $BUILD -j2" >&2
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tensord-adapters.XXXXXX") || exit 1
DPID=
stop_daemon() {
    if [ -n "$DPID" ]; then
        kill -TERM "$DPID" 2>/dev/null
        wait "$DPID"
        local rc=$?
        DPID=
        return $rc
    fi
}
trap 'stop_daemon; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) cores, $(awk '/^model name/ {sub(/^[^:]*: /, ""); print; exit}' /proc/cpuinfo)," \
    "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)," \
    "$(mkdir -p "$DATA" && df -PT "$DATA" | awk 'NR == 2 {print $2 " on " $1}')"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"

"$BENCH" --dir "$DATA" --generate --count "$COUNT" || exit 1

# The cache must hold every adapter (max_entries defaults to 1024), and with --hold every load
# held through td_load is a connection of its own.
ENTRIES=$((COUNT > 1024 ? COUNT : 1024))
CONNS=$((PROCS * (HOLD + 1) + 16))
CONNS=$((CONNS > 256 ? CONNS : 256))
printf 'max_entries = %d\nmax_clients = %d\nmax_clients_per_uid = %d\n' \
    "$ENTRIES" "$CONNS" "$CONNS" >"$TMP/tensord.conf"
SOCK=$TMP/tensord.sock
"$DAEMON" --socket "$SOCK" --config "$TMP/tensord.conf" --log-level notice 2>"$TMP/tensord.log" &
DPID=$!
for _ in $(seq 100); do
    [ -S "$SOCK" ] && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
done
if [ ! -S "$SOCK" ]; then
    echo "adapters.sh: tensord did not start:" >&2
    cat "$TMP/tensord.log" >&2
    exit 1
fi
echo "$("$DAEMON" --version 2>&1 | head -1), pid $DPID, socket $SOCK, $(tr '\n' ' ' <"$TMP/tensord.conf")"

RESULTS=$TMP/results.txt
: >"$RESULTS"
for run in $(seq "$RUNS"); do
    for mode in embedded daemon client; do
        args=(--dir "$DATA" --count "$COUNT" --procs "$PROCS" --seconds "$SECS" --hold "$HOLD"
            --seed "$run" --mode "$mode" --label "run$run")
        [ "$mode" = embedded ] || args+=(--socket "$SOCK" --daemon-pid "$DPID")
        out=$("$BENCH" "${args[@]}") || { echo "adapters.sh: bench_adapters --mode $mode failed" >&2; exit 1; }
        echo "$out"
        grep '^RESULT ' <<<"$out" >>"$RESULTS"
    done
done

if ! stop_daemon; then
    echo "adapters.sh: tensord did not stop cleanly:" >&2
    cat "$TMP/tensord.log" >&2
    exit 1
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "$PROCS processes, $COUNT adapters of 64 tensors, random loads for $SECS s, hold $HOLD;" \
    "medians of $RUNS runs:"
echo
awk '
function us(v) {
    if (v < 0) return "—"
    if (v < 10) return sprintf("%.1f µs", v)
    if (v < 1000) return sprintf("%.0f µs", v)
    if (v < 10000) return sprintf("%.2f ms", v / 1000)
    return sprintf("%.1f ms", v / 1000)
}
function median(mode, key,    n, i, j, t, a) {
    n = cnt[mode]
    for (i = 1; i <= n; i++) a[i] = val[mode, key, i]
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    delete kv
    for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    m = kv["mode"]; k = ++cnt[m]
    if (!(m in seen)) { seen[m] = 1; order[++nm] = m }
    for (f in kv) val[m, f, k] = kv[f]
}
END {
    name["embedded"] = "embedded (`td_load`, `TD_MODE_EMBEDDED`)"
    name["daemon"] = "daemon (`td_load`, a connection per load)"
    name["client"] = "daemon (`td_client_load`, one `td_client` per process)"
    print "| mode | loads/s | p50 | p99 | max | failures | CPU per load: clients | daemon |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nm; i++) {
        m = order[i]
        d = m == "embedded" ? -1 : median(m, "daemon_cpu_us_per_load")
        printf "| %s | %.0f | %s | %s | %s | %d | %s | %s |\n", name[m],
            median(m, "loads_per_s"), us(median(m, "p50_us")), us(median(m, "p99_us")),
            us(median(m, "max_us")), median(m, "failures"),
            us(median(m, "client_cpu_us_per_load")), us(d)
    }
}' "$RESULTS"
