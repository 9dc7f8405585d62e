#!/bin/bash
# bench/run.sh - builds tensord in Release, runs every benchmark side by side against its
# baselines, and writes BENCHMARKS.md (plus bench/plots/*.png).
#
#   bench/run.sh [--quick] [--keep] [--dir DIR] [--build DIR] [--out FILE] [--phases LIST]
#
#   --quick    small sizes and short runs (about 2 minutes); the full run takes about 10 minutes
#              on a 2-core machine and needs about 10 GiB of free disk and memory
#   --keep     keep the generated model files and logs (DIR) afterwards
#   --dir      where the model files go (default BUILD/bench-data; its file system is reported)
#   --build    the Release build directory (default SOURCE/build-bench)
#   --out      the report (default SOURCE/BENCHMARKS.md)
#   --phases   comma-separated subset of: sys,size,count,goal,load,mem,decode,save,proto,dequant,
#              python
#              (the report then shows only what ran)
#
# Environment: TENSORD_BENCH_PY (default /usr/bin/python3, Debian's, with numpy);
# TENSORD_BENCH_DAEMON (a tensord binary to use instead of the one built here);
# TD_ORACLE_LIB (llama.cpp's libggml-base.so; default: where scripts/install-oracle.sh puts it;
# without it the llama.cpp columns say n/a).
#
# Every measurement is printed by a program as a RESULT line (key=value pairs); they are
# collected in DIR/results.txt, and bench/report.py turns them into the report. "Warm" means
# the file is in the page cache and the process has loaded it before: each program does its
# warm-up loads, then takes the median of its timed repeats. Ratios are only ever computed
# between figures of the same run.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$SRC/build-bench
DATA=
OUT=$SRC/BENCHMARKS.md
PY=${TENSORD_BENCH_PY:-/usr/bin/python3}
QUICK=0
KEEP=0
PHASES=sys,size,count,goal,load,mem,decode,save,proto,dequant,python

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --dir) DATA=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --phases) PHASES=$2; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
DATA=${DATA:-$BUILD/bench-data}

if [ $QUICK = 1 ]; then
    MODE=quick
    SIZES="1M 16M 64M"          # warm load against file size
    COUNTS="10 100 1000"        # warm load against tensor count ...
    COUNT_BYTES=16M             # ... at this total size
    MODEL_BYTES=64M             # the goals' "1 GiB, 300 tensors" model
    GOAL_ROUNDS=2
    MEM_PROCS="1 8"
    MEM_COPY_PROCS="1 8"
    CLIENTS="1 4 16 64"
    LOAD_SECONDS=1
    MAXSEC=1                    # per load measurement
    SAVE_BYTES=32M
    ZBYTES=4M
    SAVE_REPEATS=3
    DECODE_ROUNDS=2
    Q4_BYTES=16M
    PROTO_ITERS=500
    DEQ_ARGS="-n 1048576 -r 5"
else
    MODE=full
    SIZES="1M 16M 256M 1G 4G"
    COUNTS="10 100 1000 10000"
    COUNT_BYTES=64M
    MODEL_BYTES=1G
    GOAL_ROUNDS=5
    MEM_PROCS="1 2 4 8"
    MEM_COPY_PROCS="1 8"        # the copying loaders inflate 1 GiB per process: ends only
    CLIENTS="1 2 4 8 16 32 64"
    LOAD_SECONDS=3
    MAXSEC=3
    SAVE_BYTES=256M
    ZBYTES=32M
    SAVE_REPEATS=5
    DECODE_ROUNDS=3
    Q4_BYTES=128M
    PROTO_ITERS=20000
    DEQ_ARGS="-r 11"
fi

mkdir -p "$DATA" || exit 1
DATA=$(cd "$DATA" && pwd)
RES=$DATA/results.txt
ENV=$DATA/env.txt
LOG=$DATA/run.log
: >"$RES"
: >"$ENV"
: >"$LOG"
B=$BUILD/bench
SOCK=$DATA/tensord.sock
DPID=

say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
env_kv() { printf '%s=%s\n' "$1" "$2" >>"$ENV"; }
has_phase() { case ",$PHASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# Runs a benchmark command; its RESULT lines go to results.txt, everything to the log.
r() {
    local out rc
    out=$("$@" 2>>"$LOG")
    rc=$?
    printf '%s\n' "$out" >>"$LOG"
    if [ $rc -ne 0 ]; then
        say "FAILED ($rc): $*"
        echo "RESULT bench=error status=fail cmd=$(echo "$*" | tr ' ' '+')" >>"$RES"
        return 0
    fi
    printf '%s\n' "$out" | grep '^RESULT' >>"$RES"
}

stop_daemon() {
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        kill -TERM "$DPID"
        wait "$DPID" 2>/dev/null
    fi
    DPID=
}

start_daemon() { # extra args... ($NICE_DAEMON: a nice(1) command line to run it under)
    stop_daemon
    ${NICE_DAEMON:-} "$TENSORD" --socket "$SOCK" "$@" 2>>"$DATA/tensord.log" &
    DPID=$!
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && "$B/bench_load" --method daemon --file "$DATA/ping.npy" --socket "$SOCK" \
            --warmup 0 --repeats 1 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "tensord did not come up (see $DATA/tensord.log)"
    return 1
}

cleanup() {
    stop_daemon
    if [ $KEEP = 0 ]; then
        rm -f "$DATA"/*.npy "$DATA"/*.npz "$DATA"/*.safetensors "$DATA"/*.gguf "$DATA"/*.bin
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bytes_of() { # 1M -> 1048576
    local v=${1%[KMG]} u=${1: -1}
    case $u in K) echo $((v << 10)) ;; M) echo $((v << 20)) ;; G) echo $((v << 30)) ;; *) echo "$1" ;; esac
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------
T_START=$(date +%s)
say "tensord benchmarks ($MODE) in $DATA"
env_kv mode "$MODE"
env_kv date "$(date -u '+%Y-%m-%d %H:%M UTC')"
env_kv commit "$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
env_kv dirty "$(git -C "$SRC" status --porcelain 2>/dev/null | grep -c . || true)"
env_kv cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
env_kv cores "$(nproc)"
env_kv threads_per_core "$(lscpu | sed -n 's/^Thread(s) per core: *//p' | head -1)"
env_kv hypervisor "$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)"
env_kv mem_gib "$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
env_kv kernel "$(uname -sr)"
env_kv fs "$(findmnt -n -o FSTYPE -T "$DATA" 2>/dev/null || stat -f -c %T "$DATA")"
env_kv fs_source "$(findmnt -n -o SOURCE -T "$DATA" 2>/dev/null)"
env_kv data_dir "$DATA"
env_kv thp "$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
env_kv loadavg_start "$(loadavg)"
env_kv numpy "$($PY -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo missing)"
env_kv python "$PY"
env_kv phases "$PHASES"
env_kv sizes "$SIZES"
env_kv counts "$COUNTS"
env_kv count_bytes "$(bytes_of $COUNT_BYTES)"
env_kv model_bytes "$(bytes_of $MODEL_BYTES)"
env_kv load_seconds "$LOAD_SECONDS"
env_kv goal_rounds "$GOAL_ROUNDS"
env_kv mem_copy_procs "$MEM_COPY_PROCS"
env_kv maxsec "$MAXSEC"
env_kv save_bytes "$(bytes_of $SAVE_BYTES)"
env_kv zbytes "$(bytes_of $ZBYTES)"
env_kv q4_bytes "$(bytes_of $Q4_BYTES)"

avail_disk=$(df -B1 --output=avail "$DATA" | tail -1)
avail_mem_gib=$(awk '/MemAvailable/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
say "free disk $((avail_disk >> 30)) GiB, available memory $avail_mem_gib GiB, load $(loadavg)"

# ---- build ----
say "building (Release) in $BUILD"
if ! cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTD_BENCH=ON -DTD_TESTS=OFF \
    >>"$LOG" 2>&1; then
    say "cmake failed (see $LOG)"
    exit 1
fi
OURS="bench_gen bench_load bench_mem bench_decode bench_save bench_daemon_load bench_sys bench_floor"
if ! cmake --build "$BUILD" -j2 --target $OURS >>"$LOG" 2>&1; then
    say "building the benchmark programs failed (see $LOG)"
    exit 1
fi
HAVE_DAEMON=1
TENSORD=${TENSORD_BENCH_DAEMON:-$BUILD/daemon/tensord}
if [ -n "${TENSORD_BENCH_DAEMON:-}" ]; then
    say "using the daemon $TENSORD (TENSORD_BENCH_DAEMON)"
elif ! cmake --build "$BUILD" -j2 --target tensord_daemon >>"$LOG" 2>&1; then
    say "building tensord failed: daemon figures will be missing (see $LOG)"
    HAVE_DAEMON=0
fi
env_kv daemon_binary "$TENSORD"
for t in bench_proto bench_dequant; do
    if [ ! -f "$SRC/bench/$t.c" ]; then
        env_kv "build_$t" "absent"
    elif cmake --build "$BUILD" -j2 --target $t >>"$LOG" 2>&1; then
        env_kv "build_$t" "ok"
    else
        env_kv "build_$t" "failed"
        say "$t does not build (see $LOG); its section will say so"
    fi
done

# The llama.cpp oracle.
ORACLE_LIB=${TD_ORACLE_LIB:-${TD_ORACLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tensord/gguf-oracle}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so}
export TD_ORACLE_LIB=$ORACLE_LIB
if [ -f "$ORACLE_LIB" ]; then
    env_kv oracle "$ORACLE_LIB"
else
    env_kv oracle "missing"
fi

"$B/bench_gen" --out "$DATA/ping.npy" --format npy --bytes 4K 2>>"$LOG"
if [ $HAVE_DAEMON = 1 ]; then
    start_daemon || HAVE_DAEMON=0
fi
env_kv have_daemon $HAVE_DAEMON

phase_start() { say "phase $1 (load $(loadavg))"; env_kv "loadavg_$1" "$(loadavg)"; P_T0=$(date +%s); }
phase_end() { env_kv "seconds_$1" $(($(date +%s) - P_T0)); }

# Repeats for a copying loader that faults in SIZE bytes of fresh memory per load.
copy_opts() {
    local b=$1
    if [ "$b" -ge $((2 << 30)) ]; then
        echo "--warmup 0 --repeats 1 --min-repeats 1"
    elif [ "$b" -ge $((512 << 20)) ]; then
        echo "--warmup 0 --repeats 3 --max-seconds 0"
    else
        echo "--max-seconds $MAXSEC"
    fi
}

# ---- the machine ----
if has_phase sys; then
    phase_start sys
    r "$B/bench_sys"
    phase_end sys
fi

# ---- warm load against file size ----
if has_phase size; then
    phase_start size
    for S in $SIZES; do
        L=size-$S
        NB=$(bytes_of $S)
        f=$DATA/$L
        say "  size $S"
        "$B/bench_gen" --out "$f.npy" --format npy --bytes $S 2>>"$LOG" || { say "gen failed"; continue; }
        r "$B/bench_load" --label $L --method embedded --file "$f.npy" --rss --max-seconds $MAXSEC
        [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label $L --method daemon --socket "$SOCK" --file "$f.npy" --max-seconds $MAXSEC
        r "$B/bench_load" --label $L --method readcopy-thp --file "$f.npy" --max-seconds $MAXSEC
        r "$B/bench_load" --label $L --method readcopy --file "$f.npy" $(copy_opts $NB)
        r $PY "$SRC/bench/numpy_bench.py" load-npy "$f.npy" mmap --label $L --max-seconds $MAXSEC
        r $PY "$SRC/bench/numpy_bench.py" load-npy "$f.npy" normal --label $L --max-seconds $MAXSEC
        "$B/bench_gen" --out "$f.gguf" --format gguf --from "$f.npy" 2>>"$LOG"
        r "$B/bench_load" --label $L --method embedded --file "$f.gguf" --rss --max-seconds $MAXSEC
        r "$B/bench_load" --label $L --method llama --file "$f.gguf" --max-seconds $MAXSEC
        [ "$NB" -le $((256 << 20)) ] &&
            r "$B/bench_load" --label $L --method llama-alloc --file "$f.gguf" $(copy_opts $NB)
        rm -f "$f.gguf"
        "$B/bench_gen" --out "$f.safetensors" --format safetensors --from "$f.npy" 2>>"$LOG"
        r "$B/bench_load" --label $L --method embedded --file "$f.safetensors" --rss --max-seconds $MAXSEC
        rm -f "$f.safetensors" "$f.npy"
    done
    phase_end size
fi

# ---- warm load against tensor count ----
if has_phase count; then
    phase_start count
    for N in $COUNTS; do
        L=count-$N
        f=$DATA/$L
        say "  count $N"
        "$B/bench_gen" --out "$f.safetensors" --format safetensors --bytes $COUNT_BYTES --tensors $N 2>>"$LOG" || continue
        "$B/bench_gen" --out "$f.gguf" --format gguf --from "$f.safetensors" 2>>"$LOG"
        "$B/bench_gen" --out "$f.npz" --format npz --from "$f.safetensors" 2>>"$LOG"
        for x in safetensors gguf npz; do
            r "$B/bench_load" --label $L --method embedded --file "$f.$x" --max-seconds $MAXSEC
            [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label $L --method daemon --socket "$SOCK" --file "$f.$x" --max-seconds $MAXSEC
        done
        r "$B/bench_load" --label $L --method readcopy-thp --file "$f.safetensors" --max-seconds $MAXSEC
        r "$B/bench_load" --label $L --method llama --file "$f.gguf" --max-seconds $MAXSEC
        r $PY "$SRC/bench/numpy_bench.py" load-npz "$f.npz" --label $L --max-seconds $MAXSEC
        rm -f "$f.safetensors" "$f.gguf" "$f.npz"
    done
    phase_end count
fi

# ---- the goals' model: MODEL_BYTES in 300 tensors ----
GOAL=$DATA/goal.safetensors
if has_phase goal || has_phase load || has_phase mem; then
    "$B/bench_gen" --out "$GOAL" --format safetensors --bytes $MODEL_BYTES --tensors 300 2>>"$LOG"
fi
if has_phase goal; then
    phase_start goal
    NB=$(bytes_of $MODEL_BYTES)
    "$B/bench_gen" --out "$DATA/goal.gguf" --format gguf --from "$GOAL" 2>>"$LOG"
    "$B/bench_gen" --out "$DATA/goal-1M.safetensors" --format safetensors --bytes 1M --tensors 300 2>>"$LOG"
    # Interleave the two modes a few times: the machine's load drifts.
    for round in $(seq $GOAL_ROUNDS); do
        r "$B/bench_load" --label goal --method embedded --file "$GOAL" --rss --max-seconds $MAXSEC
        [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label goal --method daemon --socket "$SOCK" --file "$GOAL" --max-seconds $MAXSEC
        [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label goal --method client --socket "$SOCK" --file "$GOAL" --max-seconds $MAXSEC
        r "$B/bench_load" --label goal --method embedded --file "$DATA/goal.gguf" --max-seconds $MAXSEC
        [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label goal --method daemon --socket "$SOCK" --file "$DATA/goal.gguf" --max-seconds $MAXSEC
        [ $HAVE_DAEMON = 1 ] && r "$B/bench_load" --label goal --method client --socket "$SOCK" --file "$DATA/goal.gguf" --max-seconds $MAXSEC
        r "$B/bench_load" --label goal-1M --method embedded --file "$DATA/goal-1M.safetensors" --rss --max-seconds $MAXSEC
    done
    r "$B/bench_load" --label goal --method llama --file "$DATA/goal.gguf" --max-seconds $MAXSEC
    r "$B/bench_load" --label goal --method readcopy-thp --file "$GOAL" --max-seconds $MAXSEC
    r "$B/bench_load" --label goal --method readcopy --file "$GOAL" $(copy_opts $NB)
    rm -f "$DATA/goal.gguf" "$DATA/goal-1M.safetensors"
    phase_end goal
fi

# ---- the daemon under load ----
if has_phase load && [ $HAVE_DAEMON = 1 ]; then
    phase_start load
    # The floor: a descriptor round trip with an mmap, before and after the loads.
    r "$B/bench_floor" --label before --file "$GOAL"
    for C in $CLIENTS; do
        r "$B/bench_daemon_load" --label load --file "$GOAL" --socket "$SOCK" --clients $C \
            --seconds $LOAD_SECONDS --daemon-pid $DPID
        r "$B/bench_daemon_load" --label load-client --client --file "$GOAL" --socket "$SOCK" \
            --clients $C --seconds $LOAD_SECONDS --daemon-pid $DPID
    done
    r "$B/bench_floor" --label after --file "$GOAL"
    # One client against the floor, in turns, so that both see the same machine: a single
    # client's figures move most with whatever else runs.
    for K in 1 2 3 4 5 6 7 8 9; do
        r "$B/bench_floor" --label round --file "$GOAL"
        r "$B/bench_daemon_load" --label floor-client --client --file "$GOAL" --socket "$SOCK" \
            --clients 1 --seconds 2 --daemon-pid $DPID
    done
    # What one load costs in system calls, client and daemon, counted by strace: the client's
    # count is the difference between 220 and 20 loads (start-up calls cancel out), the
    # daemon's is everything it did during the 220-load run.
    if command -v strace >/dev/null; then
        sc_client() { # method loads -> calls
            strace -c -f -o "$DATA/strace-client-$1-$2.txt" "$B/bench_load" --method $1 --socket "$SOCK" \
                --file "$GOAL" --warmup 0 --repeats $2 --max-seconds 1000 >>"$LOG" 2>&1
            awk '$NF == "total" {print $(NF-2)}' "$DATA/strace-client-$1-$2.txt"
        }
        for M in daemon client; do
            c20=$(sc_client $M 20)
            timeout 120 strace -c -f -p "$DPID" -o "$DATA/strace-daemon-$M.txt" 2>>"$LOG" &
            SPID=$!
            sleep 1
            c220=$(sc_client $M 220)
            sleep 0.5
            kill -INT $SPID 2>/dev/null
            wait $SPID 2>/dev/null
            dm=$(awk '$NF == "total" {print $(NF-2)}' "$DATA/strace-daemon-$M.txt" 2>/dev/null)
            echo "RESULT bench=syscalls method=$M client_loads=200 client_calls=$((${c220:-0} - ${c20:-0})) daemon_loads=220 daemon_calls=${dm:-0} status=ok" >>"$RES"
        done
    fi
    # The floor at 64 clients (bench_floor --clients: one server waiting in epoll, as the
    # daemon does, and nothing but the descriptor round trip and the mmap), three times, in
    # turns with 64 clients through td_client, server and daemon at nice -10 as tensord.service
    # runs the daemon (when this user may raise a priority; else both as they are).
    NICE=0
    nice -n -10 true 2>/dev/null && NICE=1
    [ $NICE = 1 ] && NICE_DAEMON="nice -n -10" start_daemon
    for K in 1 2 3; do
        r "$B/bench_floor" --label many --clients 64 --seconds $LOAD_SECONDS --file "$GOAL" \
            --server-nice $([ $NICE = 1 ] && echo -10 || echo 0)
        [ $NICE = 1 ] && r "$B/bench_daemon_load" --label load-nice --client --file "$GOAL" \
            --socket "$SOCK" --clients 64 --seconds $LOAD_SECONDS --daemon-pid $DPID
    done
    [ $NICE = 1 ] && start_daemon
    phase_end load
fi

# ---- memory shared by 1..8 processes ----
MEMZ=$DATA/mem.npz
if has_phase mem || has_phase decode; then
    # Deflated npz of the same size and tensor count; "smooth" data deflates fast (the run
    # stays short) - see bench_util.h.
    "$B/bench_gen" --out "$MEMZ" --format npzc --bytes $MODEL_BYTES --tensors 300 --fill smooth 2>>"$LOG"
fi
if has_phase mem; then
    phase_start mem
    for P in $MEM_PROCS; do
        say "  $P processes"
        r "$B/bench_mem" --label embedded-st --method embedded --file "$GOAL" --procs $P
        if [ $HAVE_DAEMON = 1 ]; then
            r "$B/bench_mem" --label daemon-st --method daemon --file "$GOAL" --procs $P --socket "$SOCK" --daemon-pid $DPID
            r "$B/bench_mem" --label daemon-npz --method daemon --file "$MEMZ" --procs $P --socket "$SOCK" --daemon-pid $DPID
        fi
        case " $MEM_COPY_PROCS " in *" $P "*) ;; *) continue ;; esac
        r "$B/bench_mem" --label embedded-npz --method embedded --file "$MEMZ" --procs $P
        r "$B/bench_mem" --label numpy-npz --method cmd --procs $P -- $PY "$SRC/bench/numpy_bench.py" hold "$MEMZ"
    done
    phase_end mem
fi

# ---- decode once ----
if has_phase decode && [ $HAVE_DAEMON = 1 ]; then
    phase_start decode
    r "$B/bench_decode" --label npz --file "$MEMZ" --socket "$SOCK" --rounds $DECODE_ROUNDS \
        --warm-file "$DATA/ping.npy"
    "$B/bench_gen" --out "$DATA/q4.gguf" --format gguf --bytes $Q4_BYTES --tensors 64 --dtype q4_0 2>>"$LOG"
    r "$B/bench_decode" --label q4_0 --file "$DATA/q4.gguf" --socket "$SOCK" --rounds $DECODE_ROUNDS \
        --dequantize float32 --warm-file "$DATA/ping.npy"
    rm -f "$DATA/q4.gguf"
    phase_end decode
fi
rm -f "$MEMZ" "$GOAL"

# ---- save throughput ----
if has_phase save; then
    phase_start save
    r "$B/bench_save" --dir "$DATA" --bytes $SAVE_BYTES --tensors 300 --zbytes $ZBYTES --ztensors 16 \
        --repeats $SAVE_REPEATS --export "$DATA/savez-in.npz"
    r $PY "$SRC/bench/numpy_bench.py" savez "$DATA/savez-in.npz" "$DATA/savez-numpy.npz" --repeats 3
    rm -f "$DATA/savez-in.npz"
    phase_end save
fi

# ---- the programs over internals: protocol and dequantization ----
if has_phase proto; then
    phase_start proto
    if [ -x "$B/bench_proto" ] && grep -q 'build_bench_proto=ok' "$ENV"; then
        "$B/bench_proto" $PROTO_ITERS >"$DATA/proto.txt" 2>>"$LOG" || say "bench_proto failed"
    fi
    phase_end proto
fi
if has_phase dequant; then
    phase_start dequant
    if [ -x "$B/bench_dequant" ] && grep -q 'build_bench_dequant=ok' "$ENV"; then
        "$B/bench_dequant" --markdown $DEQ_ARGS >"$DATA/dequant.md" 2>>"$LOG" ||
            say "bench_dequant failed"
    fi
    phase_end dequant
fi

# ---- the Python module against numpy ----
if has_phase python; then
    phase_start python
    if cmake --build "$BUILD" -j2 --target tensord_python >>"$LOG" 2>&1; then
        env_kv build_python ok
        PY_ARGS="--dir $DATA --markdown"
        [ $QUICK = 1 ] && PY_ARGS="$PY_ARGS --quick"
        [ $HAVE_DAEMON = 1 ] && PY_ARGS="$PY_ARGS --socket $SOCK"
        PYTHONPATH=$BUILD/python $PY "$SRC/bench/python_bench.py" $PY_ARGS >"$DATA/python.md" \
            2>>"$LOG" || say "python_bench.py failed (see $LOG)"
    else
        env_kv build_python "did not build (see run.log)"
        say "building the Python module failed (see $LOG)"
    fi
    phase_end python
fi

stop_daemon
env_kv loadavg_end "$(loadavg)"
env_kv seconds_total $(($(date +%s) - T_START))
say "writing $OUT"
$PY "$SRC/bench/report.py" --data "$DATA" --out "$OUT" --plots "$SRC/bench/plots" || exit 1
say "done in $(($(date +%s) - T_START)) s"
