#!/usr/bin/python3
"""The Python module against numpy, in one run: warm loads of the same files.

  python_bench.py [--dir DIR] [--quick] [--socket SOCK] [--markdown]

  npy:  np.asarray(tensord.load(f))                       (embedded, and through tensord
                                                           when --socket names a daemon)
        against np.load(f, mmap_mode='r')
  npz:  {k: np.asarray(v) for k, v in tensord.load(f).items()}
        against {k: z[k] for k in z} with z = np.load(f)  (an NpzFile is lazy: reading every
                                                           member is the load a user means)
        for a stored and a deflated npz of the same arrays.

Each figure is the median of back-to-back timed loads after two warm-up loads, like
bench_load's (the files are in the page cache; each result is dropped, untimed, before the next
load; no gc.collect() between loads: on a loaded machine its pause lets the daemon fall asleep,
and the figure becomes the scheduler's wake-up latency). Run with PYTHONPATH naming the
build's python/ directory. --markdown prints the section BENCHMARKS.md holds (bench/run.sh puts
it there); otherwise a plain table.
"""
import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import tensord


def timed(fn, repeats, max_seconds):
    for _ in range(2):
        r = fn()
        del r
        gc.collect()
    times = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        del r  # no cycles: this frees the result (and ends a daemon lease) at once
        times.append(t1 - t0)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times), len(times)


def human(seconds):
    if seconds < 1e-3:
        return "%.1f µs" % (seconds * 1e6)
    if seconds < 1:
        return "%.2f ms" % (seconds * 1e3)
    return "%.2f s" % seconds


def size_name(n):
    return "%d MiB" % (n >> 20) if n >= 1 << 20 else "%d KiB" % (n >> 10)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / (1 << 20)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "mem": "%.1f GiB" % mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__, "tensord": tensord.__version__, "commit": commit,
            "load": " ".join(open("/proc/loadavg").read().split()[:3]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where the files go (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="small files, few repeats")
    ap.add_argument("--socket", help="a running tensord's socket: adds daemon-mode figures")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    tmp = None
    if not a.dir:
        tmp = tempfile.TemporaryDirectory(prefix="td-pybench.")
        a.dir = tmp.name
    os.makedirs(a.dir, exist_ok=True)
    sizes = [1 << 20, 16 << 20] if a.quick else [1 << 20, 64 << 20, 256 << 20]
    npz_bytes, npz_tensors = (8 << 20, 50) if a.quick else (64 << 20, 100)
    repeats, max_seconds = (11, 1) if a.quick else (31, 3)
    rows = []  # (what, file, ours, numpy, note)
    rng = np.random.default_rng(1)

    for n in sizes:
        p = os.path.join(a.dir, "w%d.npy" % n)
        np.save(p, (rng.standard_normal(n // 4) * 0.02).astype(np.float32))
        ours, k = timed(lambda: np.asarray(tensord.load(p, mode="embedded")), repeats,
                        max_seconds)
        theirs, _ = timed(lambda: np.load(p, mmap_mode="r"), repeats, max_seconds)
        rows.append(("npy, %s" % size_name(n), "tensord.load (embedded)", ours,
                     "np.load(mmap_mode='r')", theirs, k))
        if a.socket:
            daemon, k = timed(lambda: np.asarray(tensord.load(p, mode="daemon",
                                                              socket=a.socket)),
                              repeats, max_seconds)
            rows.append(("npy, %s" % size_name(n), "tensord.load (daemon)", daemon,
                         "np.load(mmap_mode='r')", theirs, k))
            c = tensord.Client(a.socket)
            client, k = timed(lambda: np.asarray(c.load(p)), repeats, max_seconds)
            c.close()
            rows.append(("npy, %s" % size_name(n), "Client.load (daemon)", client,
                         "np.load(mmap_mode='r')", theirs, k))
        os.unlink(p)

    arrays = {"layer.%d.weight" % i: np.linspace(-1, 1, npz_bytes // npz_tensors // 4,
                                                 dtype=np.float32) * (i + 1)
              for i in range(npz_tensors)}
    for kind, save in (("stored", np.savez), ("deflated", np.savez_compressed)):
        p = os.path.join(a.dir, "m-%s.npz" % kind)
        save(p, **arrays)

        def ours_load():
            return {k: np.asarray(v) for k, v in tensord.load(p, mode="embedded").items()}

        def numpy_load():
            with np.load(p) as z:
                return {k: z[k] for k in z.files}

        ours, k = timed(ours_load, repeats, max_seconds)
        theirs, _ = timed(numpy_load, repeats, max_seconds)
        what = "npz %s, %s in %d arrays" % (kind, size_name(npz_bytes), npz_tensors)
        rows.append((what, "tensord.load (embedded)", ours, "np.load, every member", theirs,
                     k))
        if a.socket:
            daemon, k = timed(lambda: {k: np.asarray(v) for k, v in
                                       tensord.load(p, mode="daemon", socket=a.socket).items()},
                              repeats, max_seconds)
            rows.append((what, "tensord.load (daemon)", daemon, "np.load, every member",
                         theirs, k))
        os.unlink(p)

    m = machine()
    if a.markdown:
        print("## Python module against numpy (bench/python_bench.py)")
        print()
        print("`tensord.load` from Python, each result turned into numpy arrays "
              "(`np.asarray`, no copy), against numpy's own loaders of the same files, warm, "
              "in one run: medians of up to %d loads after 2 warm-up loads. Machine: %s, "
              "%d cores, %s, Linux %s; Python %s, numpy %s; commit `%s`, %s, load average "
              "%s at the start." % (repeats, m["cpu"], m["cores"], m["mem"], m["kernel"],
                                    m["python"], m["numpy"], m["commit"], m["date"], m["load"]))
        print()
        print("| file | tensord | median | numpy | median | ratio |")
        print("|---|---|---|---|---|---|")
        for what, ours_name, ours, theirs_name, theirs, k in rows:
            ratio = theirs / ours
            print("| %s | %s | %s | %s | %s | **%s** |" % (
                what, ours_name, human(ours), theirs_name, human(theirs),
                ("%.1f× faster" % ratio) if ratio >= 1 else ("%.2f× (slower)" % ratio)))
        print()
        print("A stored npz member is a view of the file for tensord; numpy reads each member "
              "into memory of its own. A deflated member is inflated on every load by both in "
              "embedded mode; through the daemon it is inflated once, for every process.")
    else:
        print("machine:", m)
        for what, ours_name, ours, theirs_name, theirs, k in rows:
            print("%-40s %-26s %10s   %-24s %10s   %.2fx  (%d loads)" % (
                what, ours_name, human(ours), theirs_name, human(theirs), theirs / ours, k))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
