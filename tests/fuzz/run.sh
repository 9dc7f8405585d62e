#!/usr/bin/env bash
# run.sh - run every libFuzzer target for a bounded time, or remake the seed corpora.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]    run each target SECONDS (default 300) on a scratch
#                                              copy of its seeds; CI passes ~45-60
#   tests/fuzz/run.sh regress [TARGET...]      run each target once over its seeds and over
#                                              tests/fuzz/regressions/TARGET/ (no fuzzing)
#   tests/fuzz/run.sh seeds                    remake corpus_{npy,safetensors,zip,gguf,load}/
#
# Environment:
#   TD_FUZZ_BUILD  the fuzz build directory (default: build-fuzz next to this checkout), made with
#                    CC=clang cmake -S . -B build-fuzz -DTD_FUZZ=ON \
#                        -DTD_SANITIZE=address,undefined -DTD_TESTS=OFF
#                    cmake --build build-fuzz -j2
#   TD_FUZZ_OUT    where scratch corpora, crash files and logs go (default: a new mktemp -d)
#   TD_FUZZ_JOBS   parallel fuzzing processes per target (default 1; the CI machines have 2 cores)
#   TD_TESTDATA    reference files (default tests/data), for `seeds`
#
# A run fails (exit 1) when any target crashes, leaks, times out on an input or runs out of
# memory; the input that did it is kept in $TD_FUZZ_OUT/TARGET/ and the log is printed. Exec
# counts per target are printed at the end (libFuzzer's "stat::number_of_executed_units").
# Minimised crashing inputs belong in tests/fuzz/regressions/TARGET/ so that `regress` replays
# them forever.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${TD_FUZZ_BUILD:-$root/build-fuzz}
[ -d "$build" ] && build=$(cd "$build" && pwd)
all_targets="npy safetensors zip gguf load proto ftab"

# Per-target options: the dictionary, and inputs large enough for the seeds (a few KB).
fuzz_opts() {
    local t=$1 dict=$here/$1.dict
    local opts=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=20 -max_len=16384
        -print_final_stats=1)
    [ -f "$dict" ] && opts+=(-dict="$dict")
    printf '%s\n' "${opts[@]}"
}

make_seeds() {
    local td=${TD_TESTDATA:-$root/tests/data}
    local py=${TD_PYTHON:-/usr/bin/python3}
    local demo=$root/build/td_demo
    [ -x "$demo" ] || demo=$(ls "$root"/build*/td_demo 2>/dev/null | head -1)
    local tmp
    tmp=$(mktemp -d)
    [ -n "$demo" ] && "$demo" save "$tmp" >/dev/null
    "$py" - "$here" "$td" "$tmp" <<'EOF'
import io, os, shutil, struct, sys, zipfile
import numpy as np
here, td, demo = sys.argv[1:4]
def put(corpus, name, data):
    d = os.path.join(here, "corpus_" + corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
def files(sub, ext):
    p = os.path.join(td, sub)
    for n in sorted(os.listdir(p)):
        if n.endswith(ext):
            yield n, open(os.path.join(p, n), "rb").read()
sel = {"npy": 0, "zip": 1, "safetensors": 2, "gguf": 3}
def both(corpus, name, data):
    put(corpus, name, data)
    put("load", corpus + "_" + name, bytes([sel[corpus]]) + data)
for n, b in files("npy", ".npy"): both("npy", n, b)
for n, b in files("npz", ".npz"): both("zip", n, b)
for n, b in files("safetensors", ".safetensors"): both("safetensors", n, b)
for n, b in files("gguf", ".gguf"): both("gguf", n, b)
for n in sorted(os.listdir(demo)):
    b = open(os.path.join(demo, n), "rb").read()
    c = {"npy": "npy", "npz": "zip", "safetensors": "safetensors", "gguf": "gguf"}[n.rsplit(".", 1)[1]]
    both(c, "ours_" + n, b)
# npy variants numpy writes or reads: versions 2.0 and 3.0, Python 2 longs, bfloat16 as V2,
# a 3-D Fortran array, big-endian int16, 16-byte aligned headers of older writers.
def npy_bytes(a, version=None):
    f = io.BytesIO()
    if version:
        np.lib.format.write_array(f, a, version=version)
    else:
        np.save(f, a)
    return f.getvalue()
a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
both("npy", "v2.npy", npy_bytes(a, (2, 0)))
both("npy", "v3.npy", npy_bytes(np.arange(3, dtype="<u2"), (3, 0)))
both("npy", "fortran3d.npy", npy_bytes(np.asfortranarray(a)))
both("npy", "be_i2.npy", npy_bytes(np.arange(6, dtype=">i2").reshape(2, 3)))
hdr = "{'descr': '<i8', 'fortran_order': False, 'shape': (2L, 1L), }"
hdr += " " * ((16 - (10 + len(hdr) + 1) % 16) % 16) + "\n"
both("npy", "py2_long.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + bytes(16))
hdr = "{'descr': '<V2', 'fortran_order': False, 'shape': (4,), }"
hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
both("npy", "bf16_v2.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + bytes(8))
# zip variants: zip64 everywhere, data descriptors (a streamed writer), a comment.
def npz_with(name, **kw):
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", **kw) as z:
        for k, v in (("w", a), ("be", np.arange(5, dtype=">f8"))):
            with z.open(k + ".npy", "w", force_zip64=True) as m:
                m.write(npy_bytes(v))
        z.comment = b"tensord fuzz seed"
    both("zip", name, f.getvalue())
npz_with("zip64_stored.npz", compression=zipfile.ZIP_STORED)
npz_with("zip64_deflated.npz", compression=zipfile.ZIP_DEFLATED)
class Unseekable(io.RawIOBase):
    def __init__(self): self.b = bytearray()
    def writable(self): return True
    def write(self, d): self.b += d; return len(d)
u = Unseekable()
with zipfile.ZipFile(u, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("s.npy", npy_bytes(np.arange(10, dtype=np.int32)))
both("zip", "descriptor.npz", bytes(u.b))
# The detect-from-content selector, on a few files.
for n, b in files("gguf", "q4_0.gguf"): put("load", "detect_" + n, b"\x04" + b)
for n, b in files("npz", "compressed.npz"): put("load", "detect_" + n, b"\x05" + b)
for n, b in files("safetensors", "with_metadata.safetensors"): put("load", "detect_" + n, b"\x06" + b)
EOF
    local rc=$?
    rm -rf "$tmp"
    return $rc
}

run_target() {
    local t=$1 secs=$2 out=$3
    local bin=$build/tests/fuzz/fuzz_$t seeds=$here/corpus_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: not built ($bin)" >&2
        return 1
    fi
    mkdir -p "$out/$t/corpus" "$out/$t/artifacts"
    local -a opts
    mapfile -t opts < <(fuzz_opts "$t")
    local jobs=${TD_FUZZ_JOBS:-1}
    local -a par=()
    [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
    local dirs=("$out/$t/corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    [ -d "$here/regressions/$t" ] && dirs+=("$here/regressions/$t")
    (cd "$out/$t" && "$bin" "${opts[@]}" "${par[@]}" -max_total_time="$secs" \
        -artifact_prefix="$out/$t/artifacts/" "${dirs[@]}") >"$out/$t/log" 2>&1
    local rc=$?
    local execs
    execs=$(grep -h 'stat::number_of_executed_units' "$out/$t"/log "$out/$t"/fuzz-*.log 2>/dev/null |
        awk '{s += $2} END {print s + 0}')
    local cov
    cov=$(grep -ho 'cov: [0-9]*' "$out/$t/log" | tail -1)
    printf '%-12s %4ss  %12s execs  %-10s  %s\n' "fuzz_$t" "$secs" "$execs" "${cov:-cov: ?}" \
        "$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
    if [ $rc -ne 0 ]; then
        tail -60 "$out/$t/log" >&2
        ls -l "$out/$t/artifacts" >&2
    fi
    return $rc
}

regress_target() {
    local t=$1 bin=$build/tests/fuzz/fuzz_$t
    local -a inputs=()
    [ -d "$here/corpus_$t" ] && inputs+=("$here/corpus_$t"/*)
    [ -d "$here/regressions/$t" ] && inputs+=("$here/regressions/$t"/*)
    if [ ${#inputs[@]} -eq 0 ]; then
        echo "fuzz_$t: no seeds or regressions to replay (run.sh seeds)" >&2
        return 1
    fi
    if "$bin" -runs=1 "${inputs[@]}" >/dev/null 2>"${TMPDIR:-/tmp}/regress_$t.log"; then
        echo "fuzz_$t: ${#inputs[@]} inputs replayed clean"
    else
        echo "fuzz_$t: FAILED on replay" >&2
        tail -40 "${TMPDIR:-/tmp}/regress_$t.log" >&2
        return 1
    fi
}

case "${1:-}" in
seeds)
    make_seeds
    exit $?
    ;;
regress)
    shift
    fail=0
    for t in ${*:-$all_targets}; do regress_target "$t" || fail=1; done
    exit $fail
    ;;
esac

secs=${1:-300}
[ $# -gt 0 ] && shift
targets=${*:-$all_targets}
out=${TD_FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/tdfuzz-XXXXXX")}
mkdir -p "$out" && out=$(cd "$out" && pwd)
echo "fuzzing ${targets// /, } for ${secs}s each; scratch in $out"
fail=0
for t in $targets; do
    run_target "$t" "$secs" "$out" || fail=1
done
exit $fail
