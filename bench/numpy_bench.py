#!/usr/bin/python3
"""numpy baselines for bench/run.sh, with Debian's numpy (/usr/bin/python3).

  numpy_bench.py load-npy FILE normal|mmap [--repeats N] [--warmup N] [--max-seconds S]
  numpy_bench.py load-npz FILE [--repeats N] [--warmup N] [--max-seconds S]
  numpy_bench.py savez IN.npz OUT.npz [--repeats N]
  numpy_bench.py hold FILE

load-npy times np.load(FILE) (normal: reads the array into memory) or
np.load(FILE, mmap_mode='r') (maps it). load-npz times np.load(FILE) plus reading every member
(an NpzFile is lazy: the load a user means is {k: f[k] for k in f}). Measured like bench_load:
warm-up loads first, then up to N timed loads (stopping after S seconds once 3 are taken), each
released (untimed) before the next; prints the median, minimum and 90th percentile.

savez loads the arrays of IN.npz (untimed) and times np.savez_compressed into OUT.npz, with an
fsync before the file is closed, as td_savez_compressed does; the output is removed after each
repeat.

hold loads FILE (an npz: every member, which numpy inflates into private memory; an npy:
normally), touches every page, prints "ready" and waits for stdin to close: bench_mem's cmd
protocol.

Output lines start with RESULT and hold key=value pairs, like the C programs'.
"""
import argparse
import gc
import os
import sys
import time

import numpy as np


def quantiles(v):
    v = sorted(v)
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    k = max(1, min(n, int(0.9 * n + 0.999999)))
    return med, v[0], v[k - 1]


def timed_loads(fn, repeats, warmup, max_seconds):
    for _ in range(warmup):
        r = fn()
        del r
        gc.collect()
    times = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        del r
        gc.collect()
        times.append((t1 - t0) * 1e6)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return times


def cmd_load_npy(a):
    if a.how == "mmap":
        fn = lambda: np.load(a.file, mmap_mode="r")
    else:
        fn = lambda: np.load(a.file)
    t = timed_loads(fn, a.repeats, a.warmup, a.max_seconds)
    med, mn, p90 = quantiles(t)
    print("RESULT bench=load label=%s method=numpy-%s file=%s bytes=%d tensors=1 n=%d "
          "median_us=%.2f min_us=%.2f p90_us=%.2f status=ok"
          % (a.label, a.how, a.file, os.path.getsize(a.file), len(t), med, mn, p90))


def cmd_load_npz(a):
    count = [0]

    def fn():
        with np.load(a.file) as f:
            d = {k: f[k] for k in f.files}
        count[0] = len(d)
        return d

    t = timed_loads(fn, a.repeats, a.warmup, a.max_seconds)
    med, mn, p90 = quantiles(t)
    print("RESULT bench=load label=%s method=numpy-npz file=%s bytes=%d tensors=%d n=%d "
          "median_us=%.2f min_us=%.2f p90_us=%.2f status=ok"
          % (a.label, a.file, os.path.getsize(a.file), count[0], len(t), med, mn, p90))


def cmd_savez(a):
    with np.load(a.inp) as f:
        arrays = {k: f[k] for k in f.files}
    nbytes = sum(v.nbytes for v in arrays.values())
    times = []
    size = 0
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        with open(a.out, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        times.append(time.perf_counter() - t0)
        size = os.path.getsize(a.out)
        os.unlink(a.out)
    med, _, _ = quantiles(times)
    print("RESULT bench=save method=numpy_savez_compressed bytes=%d n=%d median_s=%.4f "
          "mb_s=%.1f tensors=%d compressed_bytes=%d status=ok"
          % (nbytes, len(times), med, nbytes / med / 1e6, len(arrays), size))


def cmd_hold(a):
    if a.file.endswith(".npz"):
        with np.load(a.file) as f:
            d = {k: f[k] for k in f.files}
    else:
        d = {"x": np.load(a.file)}
    s = 0
    for v in d.values():
        b = v.reshape(-1).view(np.uint8)
        s += int(b[::4096].sum())
    sys.stdout.write("ready %d\n" % (s & 1))
    sys.stdout.flush()
    sys.stdin.read()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load-npy", "load-npz"):
        s = sub.add_parser(name)
        s.add_argument("file")
        if name == "load-npy":
            s.add_argument("how", choices=["normal", "mmap"])
        s.add_argument("--repeats", type=int, default=31)
        s.add_argument("--warmup", type=int, default=2)
        s.add_argument("--max-seconds", type=float, default=5.0)
        s.add_argument("--label", default="-")
    s = sub.add_parser("savez")
    s.add_argument("inp")
    s.add_argument("out")
    s.add_argument("--repeats", type=int, default=3)
    s = sub.add_parser("hold")
    s.add_argument("file")
    a = p.parse_args()
    {"load-npy": cmd_load_npy, "load-npz": cmd_load_npz, "savez": cmd_savez,
     "hold": cmd_hold}[a.cmd](a)


if __name__ == "__main__":
    main()
