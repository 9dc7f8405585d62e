#!/usr/bin/python3
"""Turns the RESULT lines of bench/run.sh into BENCHMARKS.md and the plots.

  report.py --data DIR --out BENCHMARKS.md --plots bench/plots

DIR holds results.txt (RESULT lines), env.txt (key=value: machine, date, commit, load),
optionally proto.txt (bench_proto's output), dequant.md (bench_dequant --markdown), python.md
(python_bench.py --markdown) and the strace summaries. Plots are drawn with gnuplot (pngcairo) from data files written to DIR.
Every ratio is between figures of the same run.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys

GIB = 1 << 30
MIB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Reading

def read_results(path):
    out = []
    with open(path) as f:
        for line in f:
            if not line.startswith("RESULT "):
                continue
            d = {}
            for tok in shlex.split(line[7:]):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    d[k] = v
            out.append(d)
    return out


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    return env


def ext(path):
    return path.rsplit(".", 1)[-1] if "." in path else ""


def fnum(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Formatting

def t_us(us):
    if us is None:
        return "n/a"
    if us < 1000:
        return "%.0f µs" % us if us >= 100 else "%.1f µs" % us
    if us < 1e6:
        return "%.2f ms" % (us / 1e3) if us < 1e4 else "%.1f ms" % (us / 1e3)
    return "%.2f s" % (us / 1e6)


def size_name(b):
    b = int(b)
    if b >= GIB and b % GIB == 0:
        return "%d GiB" % (b // GIB)
    if b >= MIB:
        return "%g MiB" % round(b / MIB, 1)
    return "%g KiB" % round(b / 1024, 1)


def kib(v):
    if v is None:
        return "n/a"
    v = float(v)
    if abs(v) >= 1024 * 1024:
        return "%.2f GiB" % (v / 1024 / 1024)
    if abs(v) >= 1024:
        return "%.1f MiB" % (v / 1024)
    return "%.0f KiB" % v


def ratio(x, digits=2):
    if x is None:
        return "n/a"
    if x >= 100:
        return "%.0f×" % x
    if x >= 10:
        return "%.1f×" % x
    return "%.*f×" % (digits, x)


MET = "✅ met"
MISSED = "❌ missed"
NA = "➖ n/a"


# ---------------------------------------------------------------------------------------------
# Selecting

class Results:
    def __init__(self, rows):
        self.rows = [r for r in rows if r.get("status") in ("ok", "na")]
        self.failed = [r for r in rows if r.get("status") == "fail"]

    def load(self, label, method, fmt=None):
        """Median over repeated measurements (median of medians) of a load figure, or None."""
        v = [fnum(r, "median_us") for r in self.rows
             if r.get("bench") == "load" and r.get("label") == label and r.get("method") == method
             and r.get("status") == "ok" and (fmt is None or ext(r.get("file", "")) == fmt)]
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None

    def load_min(self, label, method, fmt=None):
        """The best (minimum) single load over every measurement of a figure, or None."""
        v = [fnum(r, "min_us") for r in self.rows
             if r.get("bench") == "load" and r.get("label") == label and r.get("method") == method
             and r.get("status") == "ok" and (fmt is None or ext(r.get("file", "")) == fmt)]
        v = [x for x in v if x is not None]
        return min(v) if v else None

    def load_row(self, label, method, fmt=None):
        for r in self.rows:
            if (r.get("bench") == "load" and r.get("label") == label
                    and r.get("method") == method
                    and (fmt is None or ext(r.get("file", "")) == fmt)):
                return r
        return None

    def rss(self, label, method, fmt=None, key="rss_growth_kib"):
        v = [fnum(r, key) for r in self.rows
             if r.get("bench") == "load" and r.get("label") == label and r.get("method") == method
             and (fmt is None or ext(r.get("file", "")) == fmt) and key in r]
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None

    def na(self, label, method):
        return any(r.get("bench") == "load" and r.get("label") == label
                   and r.get("method") == method and r.get("status") == "na" for r in self.rows)

    def of(self, bench, **kw):
        return [r for r in self.rows if r.get("bench") == bench
                and all(r.get(k) == v for k, v in kw.items())]

    def one(self, bench, **kw):
        x = self.of(bench, **kw)
        return x[0] if x else None


# ---------------------------------------------------------------------------------------------
# Plots

def gnuplot(script, cwd):
    try:
        subprocess.run(["gnuplot"], input=script.encode(), cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write("report.py: gnuplot failed: %s\n" % getattr(e, "stderr", e))
        return False


def write_dat(path, header, rows):
    with open(path, "w") as f:
        f.write("# " + " ".join(header) + "\n")
        for row in rows:
            f.write(" ".join("NaN" if v is None else ("%.6g" % v if isinstance(v, float) else str(v))
                             for v in row) + "\n")


PLOT_HEAD = """set terminal pngcairo size 1000,700 font "DejaVu Sans,11" noenhanced
set grid
set key below maxrows 4 font ",10"
set datafile missing "NaN"
"""


def write_series(data, stem, xs, series):
    """One data file per series (stem-K.dat), holding only the points it has; returns the names.
    gnuplot then draws each line through the points that exist."""
    names = []
    for k, ys in enumerate(series):
        name = "%s-%d.dat" % (stem, k)
        with open(os.path.join(data, name), "w") as f:
            for x, y in zip(xs, ys):
                if y is not None:
                    f.write("%s %.6g\n" % (x, y))
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Figures quoted in the analyses (bench/limits.md)

class Holes(dict):
    def __missing__(self, key):
        return "?"


def proto_figures(data):
    """tables/s of encode and decode of a 300-tensor LOAD_OK from bench_proto's output."""
    enc = dec = None
    path = os.path.join(data, "proto.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) >= 2 and p[0] == "encode_300_nometa":
                    enc = float(p[1])
                elif len(p) >= 2 and p[0] == "decode_300_nometa":
                    dec = float(p[1])
    return enc, dec


def load64(R):
    """The 64-client run through td_client (one connection per process), else through td_load."""
    return R.one("daemon_load", label="load-client", clients="64") or R.one(
        "daemon_load", label="load", clients="64")


def ceiling(R, env):
    """(CPU µs per load, loads/s the cores could give) at 64 clients, or None."""
    r = load64(R)
    if not r:
        return None
    c, d = fnum(r, "client_cpu_us_per_load"), fnum(r, "daemon_cpu_us_per_load")
    if c is None or d is None or d < 0 or c + d <= 0:
        return None
    return c + d, int(env.get("cores", "1")) * 1e6 / (c + d)


def floor_us(R):
    """Median CPU per round trip (both processes) of the one-client floor runs, or None."""
    v = [fnum(r, "cpu_total_us") for r in R.of("floor") if r.get("label") != "many"]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def floor_rounds(R):
    """(median floor, median one-client CPU, median of the rounds' ratios) of the rounds that
    ran the floor and one td_client in turns, or (None, None, None)."""
    fs = [fnum(r, "cpu_total_us") for r in R.of("floor", label="round")]
    cs = [load_cpu(r) for r in R.of("daemon_load", label="floor-client")]
    pairs = [(f, c) for f, c in zip(fs, cs) if f and c]
    if not pairs:
        return None, None, None
    return (statistics.median(f for f, _ in pairs), statistics.median(c for _, c in pairs),
            statistics.median(c / f for f, c in pairs))


def load_cpu(r):
    """Client + daemon CPU per load of a daemon_load result, or None."""
    if not r:
        return None
    c, d = fnum(r, "client_cpu_us_per_load"), fnum(r, "daemon_cpu_us_per_load")
    return c + d if c is not None and d is not None and d >= 0 else None


def placeholders(env, R, sysr, data, rm_st, rm_gg, rct):
    ph = Holes()
    r64 = load64(R)
    if r64:
        c, d = fnum(r64, "client_cpu_us_per_load"), fnum(r64, "daemon_cpu_us_per_load")
        if c is not None:
            ph["client_cpu_us"] = "%.0f" % c
        if d is not None and d >= 0:
            ph["daemon_cpu_us"] = "%.0f" % d
    ce = ceiling(R, env)
    if ce:
        ph["cpu_per_load_us"] = "%.0f" % ce[0]
        ph["ceiling"] = "%.0f" % ce[1]
    nice = R.of("daemon_load", label="load-nice", clients="64")
    i1 = R.one("daemon_load", label="load", clients="64")
    ph["info_lps"] = "%.0f" % float(i1["loads_per_s"]) if i1 else "?"
    ph["nice_p99"] = (", ".join(t_us(float(n["p99_us"])) for n in nice) if nice else "?")
    many = R.of("floor", label="many")
    ph["many_p99"] = ", ".join(t_us(float(m["p99_us"])) for m in many) if many else "?"
    ph["many_lps"] = ", ".join("%.0f" % float(m["loads_per_s"]) for m in many) if many else "?"
    ph["many_cpu"] = ", ".join(t_us(float(m["cpu_total_us"])) for m in many) if many else "?"
    nc = [load_cpu(n) for n in nice]
    ph["nice_cpu"] = ", ".join(t_us(c) for c in nc if c) if nc else "?"
    ph["plain_p99"] = t_us(float(r64["p99_us"])) if r64 else "?"
    fl = floor_us(R)
    ph["floor_us"] = t_us(fl) if fl else "?"
    rf, rc, rr = floor_rounds(R)
    ph["round_floor_us"] = t_us(rf) if rf else "?"
    ph["cpu1_us"] = t_us(rc) if rc else "?"
    ph["cpu1_ratio"] = ratio(rr) if rr else "?"
    ph["cores"] = env.get("cores", "?")
    ph["loadavg_goal"] = env.get("loadavg_goal", "?").split()[0] if env.get("loadavg_goal") else "?"
    ph["loadavg_load"] = env.get("loadavg_load", "?").split()[0] if env.get("loadavg_load") else "?"
    if sysr:
        su, fu = float(sysr["syscall_us"]), float(sysr["fault_us"])
        ph["syscall_us"] = "%.1f" % su
        ph["fault_us"] = "%.0f" % fu
        ph["memcpy_gb_s"] = "%.1f" % float(sysr["memcpy_gb_s"])
    for method, suffix in (("client", ""), ("daemon", "_tdload")):
        sc = R.one("syscalls", method=method)
        if sc:
            c = float(sc["client_calls"]) / float(sc["client_loads"])
            d = float(sc["daemon_calls"]) / float(sc["daemon_loads"])
            ph["client_calls" + suffix] = "%.0f" % c
            ph["daemon_calls" + suffix] = "%.0f" % d
            ph["calls_per_load" + suffix] = "%.0f" % (c + d)
            if sysr:
                ph["syscall_total_us" + suffix] = "%.0f" % ((c + d) * float(sysr["syscall_us"]))
    ph["daemon_min_ratio"] = ratio(rm_st)
    ph["daemon_min_ratio_gguf"] = ratio(rm_gg)
    if rct:
        ph["thp_ms"] = "%.0f" % (rct / 1000)
        ph["thp_us_1000"] = "%.0f" % (rct / 1000)
    emb_st, dmn_st = R.load("goal", "embedded", "safetensors"), R.load("goal", "daemon",
                                                                      "safetensors")
    emb_gg, emb_gg_min = R.load("goal", "embedded", "gguf"), R.load_min("goal", "embedded", "gguf")
    ph["emb_st"], ph["dmn_st"], ph["emb_gg"] = t_us(emb_st), t_us(dmn_st), t_us(emb_gg)
    ph["emb_gg_min"] = t_us(emb_gg_min)
    if rct and emb_gg:
        ph["gguf_thp_ratio"] = ratio(rct / emb_gg) + " faster than"
    sv = R.one("save", method="td_save")
    if sv and "vs_raw" in sv:
        ph["npy_vs_raw"] = ratio(float(sv["vs_raw"]))
    z = R.one("save", method="engine_zlib6_deflate_crc")
    t = R.one("save", method="td_savez_compressed")
    l = R.one("save", method="engine_libdeflate6_deflate_crc")
    if z and z.get("status") == "ok":
        ph["zlib_mb_s"] = "%.1f" % float(z["mb_s"])
    if t:
        ph["tdz_mb_s"] = "%.1f" % float(t["mb_s"])
        ph["engine"] = t.get("engine", "an unknown engine")
    if l and l.get("status") == "ok":
        ph["ld_mb_s"] = "%.1f" % float(l["mb_s"])
        if z and z.get("status") == "ok":
            ph["ld_ratio"] = ratio(float(l["mb_s"]) / float(z["mb_s"]), 1)
    enc, dec = proto_figures(data)
    if enc:
        ph["enc_us"] = "%.0f" % (1e6 / enc)
    if dec:
        ph["dec_us"] = "%.0f" % (1e6 / dec)
    return ph


# ---------------------------------------------------------------------------------------------
# The report

def repo_rel(path):
    """path relative to the repository (where the report is about), so that the report names
    no machine's folders."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rel = os.path.relpath(path, top)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def sections(text):
    """[(title or None, lines)] of a markdown text, split at its "## " headings."""
    out = [(None, [])]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        out[-1][1].append(line)
    return out


# Sections of BENCHMARKS.md written from other programs' runs (bench_shards, bench/adapters.sh),
# not from this script's: a new report keeps them as they are.
FOREIGN = ("A model in shards against one file", "Many small models")


def keep_foreign_sections(text, path):
    """text, with the FOREIGN sections of the report at path put back before "What limits us",
    so that a new run does not drop them."""
    if not os.path.exists(path):
        return text
    with open(path) as f:
        old = sections(f.read())
    new = sections(text)
    ours = {t for t, _ in new}
    foreign = [lines for t, lines in old
               if t and t not in ours and t.startswith(FOREIGN)]
    if not foreign:
        return text
    out = []
    for t, lines in new:
        if t == "What limits us":
            for fl in foreign:
                out.extend(fl)
        out.extend(lines)
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plots", required=True)
    a = ap.parse_args()
    data = os.path.abspath(a.data)
    plots = os.path.abspath(a.plots)
    os.makedirs(plots, exist_ok=True)
    env = read_env(os.path.join(data, "env.txt"))
    R = Results(read_results(os.path.join(data, "results.txt")))
    out_dir = os.path.dirname(os.path.abspath(a.out))
    plot_rel = os.path.relpath(plots, out_dir)

    L = []  # the document
    w = L.append
    model_bytes = int(env.get("model_bytes", GIB))
    quick = env.get("mode") == "quick"

    # ---- header ----
    w("# tensord benchmarks")
    w("")
    w("Written by `bench/run.sh`%s on %s, commit `%s`%s. Every ratio below compares figures "
      "taken in this one run on this one machine; absolute times move with the machine's load, "
      "the ratios much less." % (
          " --quick" if quick else "", env.get("date", "?"), env.get("commit", "?"),
          " (with %s uncommitted changes in the tree)" % env["dirty"]
          if env.get("dirty", "0") not in ("0", "") else ""))
    if quick:
        w("")
        w("**Quick mode:** small sizes (the \"1 GiB\" model is %s) and short runs; run "
          "`bench/run.sh` without `--quick` for the figures the goals are stated for."
          % size_name(model_bytes))
    w("")
    w("## Machine")
    w("")
    sysr = R.one("sys")
    w("| | |")
    w("|---|---|")
    cpu = env.get("cpu", "?")
    hv = env.get("hypervisor", "")
    w("| CPU | %s, %s cores (%s thread per core)%s |" % (
        cpu, env.get("cores", "?"), env.get("threads_per_core", "?"),
        ", virtual machine (%s)" % hv if hv else ""))
    w("| Memory | %s GiB |" % env.get("mem_gib", "?"))
    w("| Kernel | %s |" % env.get("kernel", "?"))
    w("| File system of the bench directory | %s on %s (`%s`) |" % (
        env.get("fs", "?"), env.get("fs_source", "?"), repo_rel(env.get("data_dir", "?"))))
    w("| Transparent huge pages | `%s` |" % env.get("thp", "?"))
    w("| numpy | %s (`%s`) |" % (env.get("numpy", "?"), env.get("python", "?")))
    w("| llama.cpp | %s |" % (
        "`libggml-base.so` of npm `@node-llama-cpp/linux-x64@3.21.1`"
        if env.get("oracle", "missing") != "missing" else "not installed: its columns are n/a"))
    phases = [k[len("loadavg_"):] for k in env if k.startswith("loadavg_")
              and k not in ("loadavg_start", "loadavg_end")]
    w("| Load average (1, 5, 15 min) | at the start %s; at the end %s; per phase: %s |" % (
        env.get("loadavg_start", "?"), env.get("loadavg_end", "?"),
        ", ".join("%s %s" % (p, env["loadavg_" + p].split()[0]) for p in phases)))
    if sysr:
        w("| What the primitives cost here | a null system call %.2f µs; the first touch of a "
          "fresh 4 KiB anonymous page %.1f µs; memcpy %.1f GB/s |" % (
              float(sysr["syscall_us"]), float(sysr["fault_us"]), float(sysr["memcpy_gb_s"])))
    w("| Run time | %s s |" % env.get("seconds_total", "?"))
    w("")
    w("The machine was shared with other work during the run (the load average above counts "
      "runnable tasks on its %s cores), so absolute figures are noisy; each figure is a median "
      "of repeats, and the goal ratios compare figures taken minutes apart at most." %
      env.get("cores", "?"))
    if sysr and float(sysr["syscall_us"]) > 1.0:
        w("")
        w("Note the primitives: this is a virtual machine where a system call costs about "
          "%.1f µs and faulting in a fresh page of anonymous memory about %.0f µs, some 20-100× "
          "what bare metal charges. Everything that makes system calls (the daemon protocol) or "
          "allocates and fills memory (every copying loader, and decoding) is slower here than "
          "it would be on bare metal; zero-copy loads are hit least." % (
              float(sysr["syscall_us"]), float(sysr["fault_us"])))
    w("")

    # ---- figures needed by the goals ----
    goals = []  # (figure, goal, measured, verdict, key)

    # 1. daemon vs embedded, model, 300 tensors.
    g_emb_st = R.load("goal", "embedded", "safetensors")
    g_dmn_st = R.load("goal", "daemon", "safetensors")
    g_emb_gg = R.load("goal", "embedded", "gguf")
    g_dmn_gg = R.load("goal", "daemon", "gguf")
    g_cl_st = R.load("goal", "client", "safetensors")
    g_cl_gg = R.load("goal", "client", "gguf")
    r_st = g_dmn_st / g_emb_st if g_dmn_st and g_emb_st else None
    r_gg = g_dmn_gg / g_emb_gg if g_dmn_gg and g_emb_gg else None
    rc_st = g_cl_st / g_emb_st if g_cl_st and g_emb_st else None
    rc_gg = g_cl_gg / g_emb_gg if g_cl_gg and g_emb_gg else None
    # Judged on the way a long-running process loads: through a td_client it keeps.
    j_st, j_gg = (rc_st, rc_gg) if (rc_st or rc_gg) else (r_st, r_gg)
    if j_st is None and j_gg is None:
        v1 = NA
    else:
        oks = [x <= 1.5 for x in (j_st, j_gg) if x is not None]
        v1 = MET if all(oks) else (MISSED if not any(oks) else "⚠️ partly met")
    m_emb_st, m_dmn_st = R.load_min("goal", "embedded", "safetensors"), R.load_min(
        "goal", "daemon", "safetensors")
    m_emb_gg, m_dmn_gg = R.load_min("goal", "embedded", "gguf"), R.load_min(
        "goal", "daemon", "gguf")
    rm_st = m_dmn_st / m_emb_st if m_dmn_st and m_emb_st else None
    rm_gg = m_dmn_gg / m_emb_gg if m_dmn_gg and m_emb_gg else None
    cl_text = ("medians through a kept `td_client`, safetensors: %s / %s = **%s**; gguf: %s / "
               "%s = **%s**. With a new connection per load (`td_load`): " % (
                   t_us(g_cl_st), t_us(g_emb_st), ratio(rc_st), t_us(g_cl_gg), t_us(g_emb_gg),
                   ratio(rc_gg))) if (g_cl_st or g_cl_gg) else "medians, "
    goals.append(("daemon warm load vs embedded, %s, 300 tensors" % size_name(model_bytes),
                  "≤ 1.5×",
                  cl_text + "safetensors: %s / %s = **%s**; gguf: %s / %s = **%s** "
                  "(best loads: %s and %s)" % (
                      t_us(g_dmn_st), t_us(g_emb_st), ratio(r_st), t_us(g_dmn_gg),
                      t_us(g_emb_gg), ratio(r_gg), ratio(rm_st), ratio(rm_gg)), v1,
                  "daemon_vs_embedded"))

    # 2. vs read()-copy.
    rc = R.load("goal", "readcopy")
    rct = R.load("goal", "readcopy-thp")
    best = min([x for x in (g_emb_st, g_dmn_st) if x] or [None]) if (g_emb_st or g_dmn_st) else None
    r_rc_e = rc / g_emb_st if rc and g_emb_st else None
    r_rc_d = rc / g_dmn_st if rc and g_dmn_st else None
    r_rct_e = rct / g_emb_st if rct and g_emb_st else None
    r_rct_d = rct / g_dmn_st if rct and g_dmn_st else None
    best_plain = max([x for x in (r_rc_e, r_rc_d) if x] or [0]) or None
    best_thp = max([x for x in (r_rct_e, r_rct_d) if x] or [0]) or None
    if best_plain is None:
        v2 = NA
    elif best_plain >= 1000 and (best_thp or 0) >= 1000:
        v2 = MET
    elif best_plain >= 1000:
        v2 = "⚠️ met against plain read(), missed against the huge-page copy"
    else:
        v2 = MISSED
    goals.append(("daemon or embedded warm load vs read()-copy, %s (safetensors, 300 tensors)"
                  % size_name(model_bytes), "≥ 1000× faster",
                  "read() into malloc: %s, **%s** vs embedded, **%s** vs daemon; read() into a "
                  "huge-page buffer: %s, **%s** / **%s**" % (
                      t_us(rc), ratio(r_rc_e), ratio(r_rc_d), t_us(rct), ratio(r_rct_e),
                      ratio(r_rct_d)), v2, "vs_readcopy"))

    # 3. embedded vs numpy mmap, npy, model size (or the largest size measured).
    sizes = env.get("sizes", "").split()
    size_labels = ["size-" + s for s in sizes]
    lab3 = None
    for s in sizes:
        b = int(s[:-1]) << {"K": 10, "M": 20, "G": 30}[s[-1]] if s[-1] in "KMG" else int(s)
        if b == model_bytes:
            lab3 = "size-" + s
    if lab3 is None and size_labels:
        lab3 = size_labels[-1]
    e3 = R.load(lab3, "embedded", "npy") if lab3 else None
    n3 = R.load(lab3, "numpy-mmap") if lab3 else None
    per_size = []
    for lab in size_labels:
        e, n = R.load(lab, "embedded", "npy"), R.load(lab, "numpy-mmap")
        if e and n:
            per_size.append(n / e)
    if e3 and n3:
        v3 = MET if n3 > e3 and all(x > 1 for x in per_size) else (
            "⚠️ met at this size, not at every size" if n3 > e3 else MISSED)
    else:
        v3 = NA
    goals.append(("embedded load vs numpy `np.load(mmap_mode='r')`, npy, %s" % (
        lab3[5:] if lab3 else "?"), "faster",
        "%s vs %s: **%s faster**%s" % (
            t_us(e3), t_us(n3), ratio(n3 / e3) if e3 and n3 else "n/a",
            "; at every size %s–%s" % (ratio(min(per_size)), ratio(max(per_size)))
            if per_size else ""), v3, "vs_numpy_mmap"))

    # 4. total Pss, 8 processes, daemon.
    m8 = R.one("mem", label="daemon-npz", procs="8")
    limit = 1.05 * model_bytes / 1024
    if m8:
        tot = float(m8["total_kib"])
        v4 = MET if tot <= limit else MISSED
        meas = "**%s** (%s in the 8 clients + %s in the daemon), limit %s" % (
            kib(tot), kib(m8["pss_total_kib"]), kib(m8["daemon_pss_kib"]), kib(limit))
    else:
        v4, meas = NA, "not measured"
    goals.append(("total Pss, 8 processes, %s model (deflated npz), daemon" % size_name(model_bytes),
                  "≤ 1.05 × model (%s)" % kib(limit), meas, v4, "pss"))

    # 5. decode once.
    dz = R.one("decode", label="npz")
    dq = R.one("decode", label="q4_0")
    parts, oks = [], []
    if dz and dz.get("status") == "ok":
        rz = float(dz["ratio"])
        parts.append("deflated npz: %s vs %s = **%.3f%%**" % (
            t_us(float(dz["second_us"])), t_us(float(dz["first_us"])), rz * 100))
        oks.append(rz <= 0.01)
    else:
        parts.append("deflated npz: not measured")
    if dq and dq.get("status") == "ok":
        rq = float(dq["ratio"])
        parts.append("q4_0 → f32: %s vs %s = **%.3f%%**" % (
            t_us(float(dq["second_us"])), t_us(float(dq["first_us"])), rq * 100))
        oks.append(rq <= 0.01)
    else:
        parts.append("q4_0 dequantized: **not available** (%s)" % (
            "td_load with opt.dequantize returns %s: %s" % (dq.get("code"), dq.get("reason"))
            if dq else "not measured"))
    if not oks:
        v5 = NA
    elif all(oks) and len(oks) == 2:
        v5 = MET
    elif all(oks):
        v5 = "✅ met for npz; q4_0 n/a"
    else:
        v5 = MISSED
    goals.append(("2nd client load vs 1st, deflated npz and dequantized q4_0", "≤ 1%",
                  "; ".join(parts), v5, "decode_once"))

    # 6. save vs raw write.
    sv = R.one("save", method="td_save")
    sst = R.one("save", method="td_save_safetensors")
    raw = R.one("save", method="raw_write_fsync")
    if sv and sst and raw:
        a6, b6 = float(sv["vs_raw"]), float(sst["vs_raw"])
        v6 = MET if a6 >= 0.9 and b6 >= 0.9 else MISSED
        meas = "td_save **%s**, td_save_safetensors **%s** (raw write+fsync %.0f MB/s)" % (
            ratio(a6), ratio(b6), float(raw["mb_s"]))
    else:
        v6, meas = NA, "not measured"
    goals.append(("save vs raw write (%s, fsync'd)" % size_name(env.get("save_bytes", 0)),
                  "≥ 0.9×", meas, v6, "save"))

    # 7. savez_compressed vs numpy.
    tz = R.one("save", method="td_savez_compressed")
    nz = R.one("save", method="numpy_savez_compressed")
    if tz and nz:
        r7 = float(nz["median_s"]) / float(tz["median_s"])
        v7 = MET if r7 >= 1.5 else MISSED
        meas = "%s vs %s: **%s** (deflate engine: %s)" % (
            "%.1f MB/s" % float(tz["mb_s"]), "%.1f MB/s" % float(nz["mb_s"]), ratio(r7),
            tz.get("engine", "?"))
    else:
        v7, meas, r7 = NA, "not measured", None
    goals.append(("savez_compressed vs numpy (%s of float32 weights)" % size_name(
        env.get("zbytes", 0)), "≥ 1.5× faster", meas, v7, "savez"))

    # 8. daemon under load.
    c64 = load64(R)
    t64 = R.one("daemon_load", label="load", clients="64")
    if c64:
        lps, p99 = float(c64["loads_per_s"]), float(c64["p99_us"])
        v8 = MET if lps >= 20000 and p99 <= 2000 else MISSED
        meas = "%s**%.0f loads/s**, p50 %s, **p99 %s**" % (
            "through a `td_client` per process: " if c64 is not t64 else "", lps,
            t_us(float(c64["p50_us"])), t_us(p99))
        if t64 and c64 is not t64:
            meas += "; with `td_load` (a connection per load): %.0f loads/s, p99 %s" % (
                float(t64["loads_per_s"]), t_us(float(t64["p99_us"])))
        many = R.of("floor", label="many")
        if many:
            meas += "; the floor itself at 64 clients (`bench_floor --clients 64`): p99 %s" % (
                ", ".join(t_us(float(m["p99_us"])) for m in many))
    else:
        v8, meas = NA, "not measured"
    goals.append(("daemon, 64 clients, %s cores, 300-tensor model" % env.get("cores", "?"),
                  "≥ 20,000 loads/s, p99 ≤ 2 ms", meas, v8, "load64"))

    # 9. CPU per warm load against the floor (a descriptor round trip with an mmap), measured
    # in turns with one client.
    fl, cpu1, r9 = floor_rounds(R)
    if fl and cpu1:
        v9 = MET if r9 <= 1.5 else MISSED
        meas = ("one client through a `td_client`, in turns with the floor: %s of CPU per load "
                "against %s: **%s** (median of the rounds' ratios)" % (t_us(cpu1), t_us(fl),
                                                                       ratio(r9)))
        fl = floor_us(R)
        cpu64 = load_cpu(R.one("daemon_load", label="load-client", clients="64"))
        if cpu64:
            meas += "; at 64 clients %s: **%s**" % (t_us(cpu64), ratio(cpu64 / fl))
    else:
        v9, meas = NA, "not measured"
    goals.append(("CPU per warm load (client + daemon) vs one descriptor round trip and an "
                  "mmap/munmap (`bench_floor`), 300-tensor model", "≤ 1.5×", meas, v9, "floor"))

    w("## Goals")
    w("")
    w("| figure | goal | measured | verdict |")
    w("|---|---|---|---|")
    for g in goals:
        w("| %s | %s | %s | %s |" % g[:4])
    w("")
    w("Plots: [load latency vs file size](%s/load_vs_size.png), "
      "[load latency vs tensor count](%s/load_vs_count.png), "
      "[memory shared by N processes](%s/memory.png), "
      "[the daemon under load](%s/daemon_load.png)." % ((plot_rel,) * 4))
    w("")
    w("The three figures asked for explicitly:")
    w("")
    e1 = R.rss("goal-1M", "embedded", "safetensors")
    e1t = R.load("goal-1M", "embedded", "safetensors")
    eg = R.rss("goal", "embedded", "safetensors")
    a1, f1 = R.rss("goal-1M", "embedded", "safetensors", "rss_anon_kib"), R.rss(
        "goal-1M", "embedded", "safetensors", "rss_file_kib")
    ag, fg = R.rss("goal", "embedded", "safetensors", "rss_anon_kib"), R.rss(
        "goal", "embedded", "safetensors", "rss_file_kib")
    w("- **Embedded load of a 1 MiB vs a %s safetensors file (300 tensors each):** %s vs %s "
      "(medians; best single loads %s vs %s); "
      "resident set growth over one load (the views kept, not touched) %s vs %s%s." % (
          size_name(model_bytes), t_us(e1t), t_us(g_emb_st),
          t_us(R.load_min("goal-1M", "embedded", "safetensors")), t_us(m_emb_st), kib(e1),
          kib(eg),
          ", of which allocated (RssAnon) %s vs %s and page cache mapped (RssFile: the header "
          "pages, and whatever else the kernel maps around the faulting page) %s vs %s" % (
              kib(a1), kib(ag), kib(f1), kib(fg)) if a1 is not None and ag is not None else ""))
    s1 = R.rss("size-1M", "embedded", "safetensors")
    big = size_labels[-1] if size_labels else None
    sb = R.rss(big, "embedded", "safetensors") if big else None
    if s1 is not None and sb is not None:
        w("  With one tensor per file, across the size sweep: %s at 1 MiB and %s at %s "
          "(load %s vs %s, best %s vs %s)." % (
              kib(s1), kib(sb), big[5:], t_us(R.load("size-1M", "embedded", "safetensors")),
              t_us(R.load(big, "embedded", "safetensors")),
              t_us(R.load_min("size-1M", "embedded", "safetensors")),
              t_us(R.load_min(big, "embedded", "safetensors"))))
    w("- **Warm load, %s model with 300 tensors, daemon vs embedded:** safetensors %s vs %s "
      "(ratio %s); gguf %s vs %s (ratio %s)." % (
          size_name(model_bytes), t_us(g_dmn_st), t_us(g_emb_st), ratio(r_st), t_us(g_dmn_gg),
          t_us(g_emb_gg), ratio(r_gg)))
    if dz and dz.get("status") == "ok":
        w("- **Deflated npz (%s, 300 members), second client vs first:** %s vs %s, ratio "
          "%.4f (%.3f%%); the same file loaded embedded (every process inflating for itself): "
          "%s." % (size_name(model_bytes), t_us(float(dz["second_us"])),
                   t_us(float(dz["first_us"])), float(dz["ratio"]), float(dz["ratio"]) * 100,
                   t_us(float(dz["embedded_us"]))))
    w("")

    # ---- load vs size ----
    cols = [("embedded", "npy", "tensord embedded (npy)"),
            ("embedded", "safetensors", "tensord embedded (safetensors)"),
            ("embedded", "gguf", "tensord embedded (gguf)"),
            ("daemon", "npy", "tensord daemon (npy)"),
            ("readcopy", None, "read() into malloc"),
            ("readcopy-thp", None, "read() into huge pages"),
            ("numpy-normal", None, "numpy np.load"),
            ("numpy-mmap", None, "numpy np.load mmap_mode='r'"),
            ("llama", None, "llama.cpp gguf_init_from_file (no_alloc)"),
            ("llama-alloc", None, "llama.cpp gguf_init_from_file (loads data)")]
    if size_labels:
        w("## Warm load latency against file size")
        w("")
        w("One float32 tensor per file, the same bytes as npy, safetensors and gguf. Median of "
          "warm loads (see *Method*); the load is timed, the release of what it returned is "
          "not. llama.cpp's `gguf_init_from_file` with `no_alloc` reads the header and builds "
          "its tensor objects (what llama.cpp does before mapping the data itself); without "
          "it, it also reads every tensor into memory (measured up to 256 MiB).")
        w("")
        w("![load latency vs file size](%s/load_vs_size.png)" % plot_rel)
        w("")
        w("| size | " + " | ".join(c[2] for c in cols) + " |")
        w("|---|" + "---:|" * len(cols))
        dat = []
        for s, lab in zip(sizes, size_labels):
            vals = [R.load(lab, m, f) for m, f, _ in cols]
            cells = []
            for (m, f, _), v in zip(cols, vals):
                cells.append(t_us(v) if v else ("n/a" if R.na(lab, m) else "–"))
            w("| %s | %s |" % (s, " | ".join(cells)))
            nb = R.load_row(lab, "embedded", "npy")
            dat.append([int(nb["bytes"]) if nb else 0] + [v for v in vals])
        w("")
        w("Speed-up of tensord embedded (npy) over each baseline (baseline time / ours):")
        w("")
        base = [c for c in cols if c[0] not in ("embedded", "daemon")]
        w("| size | tensord daemon (npy) | " + " | ".join(c[2] for c in base) + " |")
        w("|---|" + "---:|" * (len(base) + 1))
        for s, lab in zip(sizes, size_labels):
            e = R.load(lab, "embedded", "npy")
            d = R.load(lab, "daemon", "npy")
            cells = [ratio(e / d) if e and d else "–"]
            for m, f, _ in base:
                v = R.load(lab, m, f)
                cells.append(ratio(v / e) if v and e else "–")
            w("| %s | %s |" % (s, " | ".join(cells)))
        w("")
        w("(The daemon column is embedded / daemon: above 1× the daemon is faster.) llama.cpp's "
          "`gguf_init_from_file` with `no_alloc` reads a one-tensor header with fread and "
          "maps nothing, so it beats every zero-copy load on tiny headers: ours opens, maps the "
          "file (the views need the mapping) and takes a page fault on the header, a few tens "
          "of µs on this machine. With many tensors the order reverses (next section).")
        w("")
        w("Resident "
          "set growth over one embedded load, kept (the views are not touched):")
        w("")
        w("| size | npy | safetensors | gguf |")
        w("|---|---:|---:|---:|")
        for s, lab in zip(sizes, size_labels):
            w("| %s | %s | %s | %s |" % (s, kib(R.rss(lab, "embedded", "npy")),
                                         kib(R.rss(lab, "embedded", "safetensors")),
                                         kib(R.rss(lab, "embedded", "gguf"))))
        w("")
        write_dat(os.path.join(data, "size.dat"), ["bytes"] + [c[0] for c in cols], dat)
        titles = [c[2] for c in cols]
        plot = PLOT_HEAD + """set output "%s/load_vs_size.png"
set title "Warm load latency against file size (one tensor; median)"
set logscale xy
set xlabel "file size (MiB)"
set ylabel "latency (ms)"
set format y "%%g"
plot """ % plots
        xs = [row[0] / 1048576 for row in dat]
        files = write_series(data, "size", xs, [[row[i + 1] for row in dat]
                                                for i in range(len(cols))])
        plot += ", ".join('"%s" using 1:($2/1000) with linespoints lw 2 title "%s"' % (
            fn, t.replace("'", "")) for fn, t in zip(files, titles)) + "\n"
        gnuplot(plot, data)

    # ---- load vs count ----
    counts = env.get("counts", "").split()
    if counts:
        ccols = [("embedded", "safetensors", "tensord embedded (safetensors)"),
                 ("daemon", "safetensors", "tensord daemon (safetensors)"),
                 ("embedded", "gguf", "tensord embedded (gguf)"),
                 ("daemon", "gguf", "tensord daemon (gguf)"),
                 ("embedded", "npz", "tensord embedded (npz, stored)"),
                 ("daemon", "npz", "tensord daemon (npz, stored)"),
                 ("llama", None, "llama.cpp gguf_init_from_file (no_alloc)"),
                 ("numpy-npz", None, "numpy np.load(npz) + every member"),
                 ("readcopy-thp", None, "read() into huge pages (safetensors)")]
        w("## Warm load latency against tensor count")
        w("")
        w("%s of float32 in N one-dimensional tensors. numpy has no zero-copy multi-tensor "
          "format: its column loads a stored npz and reads every member." % size_name(
              env.get("count_bytes", 0)))
        w("")
        w("![load latency vs tensor count](%s/load_vs_count.png)" % plot_rel)
        w("")
        w("| tensors | " + " | ".join(c[2] for c in ccols) + " |")
        w("|---|" + "---:|" * len(ccols))
        dat = []
        for n in counts:
            lab = "count-" + n
            vals = [R.load(lab, m, f) for m, f, _ in ccols]
            w("| %s | %s |" % (n, " | ".join(
                t_us(v) if v else ("n/a" if R.na(lab, m) else "–")
                for (m, f, _), v in zip(ccols, vals))))
            dat.append([int(n)] + vals)
        w("")
        w("A stored npz costs more per tensor than the other formats because the loader "
          "checks every member's local header against the central directory: the headers are "
          "spread over the file, so each costs a page fault of its own.")
        w("")
        w("Per tensor (median / N): " + "; ".join(
            "%s: %s" % (c[2], ", ".join("%s at %s" % (t_us(v / int(n)), n)
                                        for n, v in zip(counts, [d[i + 1] for d in dat]) if v))
            for i, c in enumerate(ccols[:4])) + ".")
        w("")
        write_dat(os.path.join(data, "count.dat"), ["tensors"] + [c[0] for c in ccols], dat)
        plot = PLOT_HEAD + """set output "%s/load_vs_count.png"
set title "Warm load latency against tensor count (%s; median)"
set logscale xy
set xlabel "tensors"
set ylabel "latency (ms)"
set format y "%%g"
plot """ % (plots, size_name(env.get("count_bytes", 0)))
        files = write_series(data, "count", [row[0] for row in dat],
                             [[row[i + 1] for row in dat] for i in range(len(ccols))])
        plot += ", ".join('"%s" using 1:($2/1000) with linespoints lw 2 title "%s"' % (
            fn, c[2].replace("'", "")) for fn, c in zip(files, ccols)) + "\n"
        gnuplot(plot, data)

    # ---- the goals' model in detail ----
    if g_emb_st or rc:
        w("## The %s, 300-tensor model" % size_name(model_bytes))
        w("")
        w("Measured %s times, interleaving embedded and daemon loads (the median of the "
          "medians; the best single load of each in brackets)." % env.get("goal_rounds", "?"))
        w("")
        w("| method | file | warm load | vs embedded (same file) |")
        w("|---|---|---:|---:|")
        rows = [("tensord embedded", "safetensors", g_emb_st, g_emb_st),
                ("tensord daemon", "safetensors", g_dmn_st, g_emb_st),
                ("tensord embedded", "gguf", g_emb_gg, g_emb_gg),
                ("tensord daemon", "gguf", g_dmn_gg, g_emb_gg),
                ("llama.cpp gguf_init_from_file (no_alloc)", "gguf", R.load("goal", "llama"),
                 g_emb_gg),
                ("read() into malloc", "safetensors", rc, g_emb_st),
                ("read() into huge pages", "safetensors", rct, g_emb_st),
                ("tensord embedded, 1 MiB file", "safetensors", e1t, g_emb_st)]
        for name, f, v, b in rows:
            w("| %s | %s | %s | %s |" % (name, f, t_us(v), ratio(v / b) if v and b else "n/a"))
        w("")
        w("Best single loads: embedded safetensors %s, daemon safetensors %s, embedded gguf %s, "
          "daemon gguf %s." % (t_us(m_emb_st), t_us(m_dmn_st), t_us(m_emb_gg), t_us(m_dmn_gg)))
        w("")

    # ---- memory ----
    mem = R.of("mem")
    if mem:
        mcols = [("embedded-st", "tensord embedded, safetensors (page cache)"),
                 ("daemon-st", "tensord daemon, safetensors (page cache)"),
                 ("daemon-npz", "tensord daemon, deflated npz (decoded once, shared memfd)"),
                 ("embedded-npz", "tensord embedded, deflated npz (each process inflates)"),
                 ("numpy-npz", "numpy np.load(npz), every member")]
        w("## Memory shared by N processes holding the same model")
        w("")
        w("Each process loads the %s model and reads one byte of every page of every tensor, "
          "then holds it; the figure is the sum of `Pss` from `/proc/PID/smaps_rollup` over "
          "the N processes, plus the daemon's own Pss in the daemon columns. The npz holds the "
          "same 300 tensors deflated (smooth synthetic data that deflates quickly, so that "
          "the run stays short)." % size_name(model_bytes))
        w("")
        w("![memory shared by N processes](%s/memory.png)" % plot_rel)
        w("")
        w("| processes | " + " | ".join(c[1] for c in mcols) + " |")
        w("|---|" + "---:|" * len(mcols))
        procs = sorted({int(r["procs"]) for r in mem})
        dat = []
        for p in procs:
            vals = []
            for lab, _ in mcols:
                r = R.one("mem", label=lab, procs=str(p))
                vals.append(float(r["total_kib"]) if r else None)
            w("| %d | %s |" % (p, " | ".join(kib(v) if v is not None else "–" for v in vals)))
            dat.append([p] + [v / 1048576 if v else None for v in vals])
        w("")
        if env.get("mem_copy_procs") and env.get("mem_copy_procs") != " ".join(
                str(p) for p in procs):
            w("The two copying loaders (each process inflates the whole model into private "
              "memory) were run at %s processes only, to keep the run short; their total is "
              "linear in N by construction." % " and ".join(env["mem_copy_procs"].split()))
            w("")
        w("Time until all N processes held the model (includes the first decode in the daemon "
          "columns when the entry was not cached yet): " + "; ".join(
              "%s: %s" % (lab, ", ".join("%s s at %s" % (r["ready_s"], r["procs"])
                                         for r in R.of("mem", label=lab)))
              for lab, _ in mcols if R.of("mem", label=lab)) + ".")
        w("")
        write_dat(os.path.join(data, "mem.dat"), ["procs"] + [c[0] for c in mcols], dat)
        plot = PLOT_HEAD + """set output "%s/memory.png"
set title "Total Pss of N processes holding the same %s model"
set xlabel "processes"
set ylabel "total Pss (GiB)"
set xtics (1, 2, 4, 8)
set yrange [0:*]
plot """ % (plots, size_name(model_bytes))
        files = write_series(data, "mem", [row[0] for row in dat],
                             [[row[i + 1] for row in dat] for i in range(len(mcols))])
        plot += ", ".join('"%s" using 1:2 with linespoints lw 2 title "%s"' % (
            fn, c[1].replace("'", "")) for fn, c in zip(files, mcols)) + "\n"
        gnuplot(plot, data)

    # ---- decode once ----
    if dz or dq:
        w("## Decode once")
        w("")
        w("Each round evicts the file from the daemon's cache; a first client process loads it "
          "in daemon mode (the daemon decodes into a sealed memfd) and holds it, then a second "
          "client process loads it. Both times are taken around `td_load` in the clients. The "
          "daemon's counters confirm a miss with one decode, then a hit.")
        w("")
        w("| file | first client | second client | second / first | embedded (decodes itself) | miss then hit |")
        w("|---|---:|---:|---:|---:|---|")
        for lab, r in (("deflated npz, %s, 300 members" % size_name(model_bytes), dz),
                       ("q4_0 GGUF %s → float32" % size_name(env.get("q4_bytes", 0)), dq)):
            if not r:
                continue
            if r.get("status") != "ok":
                w("| %s | n/a | n/a | n/a | n/a | %s: %s |" % (lab, r.get("code"),
                                                               r.get("reason")))
            else:
                w("| %s | %s | %s | %.4f%% | %s | %s |" % (
                    lab, t_us(float(r["first_us"])), t_us(float(r["second_us"])),
                    float(r["ratio"]) * 100, t_us(float(r["embedded_us"])),
                    r["first_miss_second_hit"]))
        w("")

    # ---- daemon under load ----
    dl = R.of("daemon_load", label="load")
    if dl:
        w("## The daemon under load")
        w("")
        w("N client processes each loop for %s s loading the cached %s 300-tensor safetensors "
          "model through the daemon, timed; then `td_dict_free`, untimed. Two ways: `td_load` "
          "in daemon mode (connect, HELLO, LOAD with the descriptor, LOAD_OK with the "
          "descriptors of the file and of the shared table, map and check the table, map the "
          "file, build 300 views over the table; freeing unmaps and closes the connection, which "
          "ends the lease), and `td_client_load` on a `td_client` each process keeps (LOAD, "
          "LOAD_OK; the table checked at the first load is kept, so only the file is mapped "
          "and the views built; freeing unmaps the file and sends a RELEASE nothing answers). "
          "The daemon runs with its defaults." % (env.get("load_seconds", "?"), size_name(model_bytes)))
        w("")
        w("![daemon under load](%s/daemon_load.png)" % plot_rel)
        w("")
        w("| clients | loads/s | p50 | p99 | max | failures | CPU per load: clients | daemon |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|")
        dat = []

        def cpu(r, k):
            v = fnum(r, k)
            return t_us(v) if v is not None and v >= 0 else "n/a"

        for r in sorted(dl, key=lambda r: int(r["clients"])):
            w("| %s | %.0f | %s | %s | %s | %s | %s | %s |" % (
                r["clients"], float(r["loads_per_s"]), t_us(float(r["p50_us"])),
                t_us(float(r["p99_us"])), t_us(float(r["max_us"])), r["failures"],
                cpu(r, "client_cpu_us_per_load"), cpu(r, "daemon_cpu_us_per_load")))
            dat.append([int(r["clients"]), float(r["loads_per_s"]), float(r["p99_us"]) / 1000,
                        float(r["p50_us"]) / 1000])
        for r in sorted(R.of("daemon_load", label="load-client"), key=lambda r: int(r["clients"])):
            w("| %s, `td_client` | %.0f | %s | %s | %s | %s | %s | %s |" % (
                r["clients"], float(r["loads_per_s"]), t_us(float(r["p50_us"])),
                t_us(float(r["p99_us"])), t_us(float(r["max_us"])), r["failures"],
                cpu(r, "client_cpu_us_per_load"), cpu(r, "daemon_cpu_us_per_load")))
        for r in sorted(R.of("daemon_load", label="load-nice"), key=lambda r: int(r["clients"])):
            w("| %s, `td_client`, daemon at nice -10 | %.0f | %s | %s | %s | %s | %s | %s |" % (
                r["clients"], float(r["loads_per_s"]), t_us(float(r["p50_us"])),
                t_us(float(r["p99_us"])), t_us(float(r["max_us"])), r["failures"],
                cpu(r, "client_cpu_us_per_load"), cpu(r, "daemon_cpu_us_per_load")))
        for r in R.of("floor", label="many"):
            w("| %s, the floor (`bench_floor --clients`) | %.0f | %s | %s | n/a | 0 | %s | %s |" % (
                r["clients"], float(r["loads_per_s"]), t_us(float(r["p50_us"])),
                t_us(float(r["p99_us"])), t_us(fnum(r, "cpu_client_us")),
                t_us(fnum(r, "cpu_server_us"))))
        w("")
        ce = ceiling(R, env)
        if ce:
            w("CPU per load is user + system time of the client processes (getrusage) and of the "
              "daemon (/proc/PID/stat) over the timed loop, divided by the loads. At 64 clients "
              "a load costs %s of CPU in all; %s cores can therefore serve at most about **%.0f "
              "loads/s** even if nothing else ran on them." % (t_us(ce[0]), env.get("cores", "?"),
                                                               ce[1]))
            w("")
        w("Clients that loop without pausing obey Little's law: mean latency = clients / "
          "throughput. At 64 clients the latency is therefore set by the throughput (64 / "
          "20,000 loads/s would be 3.2 ms), not by the daemon's service time.")
        w("")
        fl = floor_us(R)
        if fl:
            w("### CPU per load against the floor")
            w("")
            w("The floor (`bench_floor`, run before and after the loads above): two processes "
              "on a Unix socket pair; the client opens the file and sends one byte with its "
              "descriptor, the server sends it back, the client maps the file, unmaps it and "
              "closes both descriptors. That is one request/reply round trip passing a "
              "descriptor each way plus an mmap/munmap, and nothing else: no protocol, table or "
              "view.")
            w("")
            w("| what | CPU per load: clients | daemon (server) | in all | vs the floor |")
            w("|---|---:|---:|---:|---:|")
            for r in R.of("floor"):
                if r.get("label") in ("round", "many"):
                    continue
                w("| the floor (%s) | %s | %s | %s | %s |" % (
                    r.get("label", "-"), t_us(fnum(r, "cpu_client_us")),
                    t_us(fnum(r, "cpu_server_us")), t_us(fnum(r, "cpu_total_us")),
                    ratio(fnum(r, "cpu_total_us") / fl)))
            for lab, how in (("load-client", "`td_client_load`"), ("load", "`td_load`")):
                for nc in ("1", "64"):
                    r = R.one("daemon_load", label=lab, clients=nc)
                    t = load_cpu(r)
                    if t:
                        w("| %s, %s client%s | %s | %s | %s | **%s** |" % (
                            how, nc, "" if nc == "1" else "s", cpu(r, "client_cpu_us_per_load"),
                            cpu(r, "daemon_cpu_us_per_load"), t_us(t), ratio(t / fl)))
            w("")
            rounds = list(zip(R.of("floor", label="round"),
                              R.of("daemon_load", label="floor-client")))
            if rounds:
                w("One client and the floor in turns (2 s of loads, then the floor, nine "
                  "times): a single client's figures move the most with whatever else runs.")
                w("")
                w("| round | the floor | `td_client_load`, 1 client: clients + daemon | ratio |")
                w("|---:|---:|---:|---:|")
                for k, (f, c) in enumerate(rounds, 1):
                    ft, ct = fnum(f, "cpu_total_us"), load_cpu(c)
                    w("| %d | %s | %s + %s = %s | %s |" % (
                        k, t_us(ft), cpu(c, "client_cpu_us_per_load"),
                        cpu(c, "daemon_cpu_us_per_load"), t_us(ct),
                        ratio(ct / ft) if ct and ft else "n/a"))
                w("")
        for method, how in (("daemon", "`td_load`"), ("client", "`td_client_load`")):
            scr = R.one("syscalls", method=method)
            if not scr:
                continue
            cpl = float(scr["client_calls"]) / float(scr["client_loads"])
            dpl = float(scr["daemon_calls"]) / float(scr["daemon_loads"])
            w("System calls per load through %s (strace -c): **%.1f in the client, %.1f in the "
              "daemon**%s." % (how, cpl, dpl, ", at %.2f µs each for a null call on this "
                               "machine: about %.0f µs of bare system-call entry per load" % (
                                   float(sysr["syscall_us"]),
                                   (cpl + dpl) * float(sysr["syscall_us"])) if sysr else ""))
            w("")
        write_dat(os.path.join(data, "load.dat"), ["clients", "loads_per_s", "p99_ms", "p50_ms"],
                  dat)
        plot = PLOT_HEAD + """set output "%s/daemon_load.png"
set title "tensord under load: N clients loading a cached 300-tensor model"
set logscale x 2
set xlabel "concurrent client processes"
set ylabel "loads per second"
set y2label "latency (ms)"
set ytics nomirror
set y2tics
set yrange [0:%d]
set y2range [0:*]
plot "load.dat" using 1:2 with linespoints lw 2 title "loads/s" axes x1y1, \\
     "load.dat" using 1:3 with linespoints lw 2 title "p99 (ms)" axes x1y2, \\
     "load.dat" using 1:4 with linespoints lw 2 title "p50 (ms)" axes x1y2, \\
     20000 with lines dashtype 2 title "goal: 20,000 loads/s" axes x1y1
""" % (plots, int(max([22000] + [1.1 * d[1] for d in dat])))
        gnuplot(plot, data)

    # ---- save ----
    sv_rows = R.of("save")
    if sv_rows:
        w("## Save throughput")
        w("")
        w("Plain saves: %s of weight-like float32, as one array (`td_save`, .npy) and as 300 "
          "arrays (`td_save_safetensors`), against the plainest durable write of the same bytes "
          "(open, write(), fsync, close); tensord's saves are atomic (temporary file, fsync, "
          "rename, fsync of the directory). The methods take turns in each repeat. Compressed: "
          "%s in 16 arrays through `td_savez_compressed` and numpy's `savez_compressed` (with an "
          "fsync before close, like ours), same arrays. Then the deflate engines alone on the "
          "same bytes, level 6, with their CRC-32." % (
              size_name(env.get("save_bytes", 0)), size_name(env.get("zbytes", 0))))
        w("")
        w("| method | bytes | median | MB/s | notes |")
        w("|---|---:|---:|---:|---|")
        for r in sv_rows:
            if r.get("status") != "ok":
                w("| %s | | | | n/a |" % r.get("method"))
                continue
            notes = []
            if "vs_raw" in r:
                notes.append("%s of raw write+fsync" % ratio(float(r["vs_raw"])))
            if "compressed_bytes" in r and r["compressed_bytes"] != "0":
                notes.append("output %.1f%% of input" % (
                    100 * float(r["compressed_bytes"]) / float(r["bytes"])))
            if "ratio" in r:
                notes.append("output %.1f%% of input" % (100 * float(r["ratio"])))
            if "engine" in r:
                notes.append("library's engine: %s" % r["engine"])
            w("| %s | %s | %.3f s | %.1f | %s |" % (r["method"], size_name(r["bytes"]),
                                                   float(r["median_s"]), float(r["mb_s"]),
                                                   "; ".join(notes)))
        w("")

    # ---- protocol ----
    proto_path = os.path.join(data, "proto.txt")
    w("## Wire protocol (bench/bench_proto.c)")
    w("")
    if os.path.exists(proto_path) and os.path.getsize(proto_path):
        w("LOAD round trips on a socketpair between two processes (a 300-tensor table, one "
          "descriptor each way), and encode/decode throughput of a 300-tensor LOAD_OK:")
        w("")
        w("```")
        with open(proto_path) as f:
            w(f.read().rstrip())
        w("```")
    else:
        w("Not run: bench_proto %s." % env.get("build_bench_proto", "absent"))
    w("")

    # ---- dequant ----
    dq_path = os.path.join(data, "dequant.md")
    w("## Dequantization throughput by type (bench/bench_dequant.c)")
    w("")
    if os.path.exists(dq_path) and os.path.getsize(dq_path):
        with open(dq_path) as f:
            w(f.read().rstrip())
    else:
        w("Not run: bench_dequant %s." % env.get("build_bench_dequant", "absent"))
    w("")

    # ---- the Python module ----
    py_path = os.path.join(data, "python.md")
    if os.path.exists(py_path) and os.path.getsize(py_path):
        with open(py_path) as f:
            w(f.read().rstrip())
        w("")
    elif "loadavg_python" in env:
        w("## Python module against numpy (bench/python_bench.py)")
        w("")
        w("Not run: the Python module %s." % env.get("build_python", "did not build"))
        w("")

    # ---- what limits us ----
    missed = [g for g in goals if g[3] not in (MET, NA)]
    w("## What limits us")
    w("")
    w("For each goal this run missed (or met only in part). The figures quoted come from this "
      "run; the perf profiles and strace timings were taken on this machine while the "
      "benchmarks were written (bench/limits.md holds the analyses).")
    w("")
    if not missed:
        w("Every goal measured in this run is met.")
        w("")
    limits_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "limits.md")
    texts = {}
    if os.path.exists(limits_path):
        key = None
        with open(limits_path) as f:
            for line in f:
                if line.startswith("@@ "):
                    key = line[3:].strip()
                    texts[key] = []
                elif key:
                    texts[key].append(line.rstrip("\n"))
    ph = placeholders(env, R, sysr, data, rm_st, rm_gg, rct)
    for g in missed:
        w("**%s** (%s; measured %s)." % (g[0], g[1], g[2]))
        w("")
        key = g[4]
        if key == "savez" and ph.get("engine") == "libdeflate":
            key = "savez_libdeflate"
        t = texts.get(key)
        if t:
            w("\n".join(t).strip().format_map(ph))
        else:
            w("(No analysis recorded for this figure.)")
        w("")

    # ---- method ----
    w("## Method")
    w("")
    w("- `bench/run.sh` builds a Release tree (`-DTD_BENCH=ON`), starts `tensord` on a private "
      "socket with its default settings, generates every model file with libtensord's own "
      "savers (`bench_gen`, fsync'd, so in the page cache), and removes them afterwards.")
    w("- Loads (`bench_load`, `numpy_bench.py`): %s warm-up loads, then up to 31 timed loads, "
      "stopping after %s s once 3 are taken; the median is reported. A copying loader that "
      "faults in 1 GiB or more per load runs 3 timed loads without warm-up (the page cache is "
      "already warm), 1 at 4 GiB." % ("2", env.get("load_seconds", "3")))
    w("- read() into malloc is the plain loader: `malloc(size)` then `read()` the whole file. "
      "read() into huge pages is the best a copying loader can do: the buffer is an anonymous "
      "mapping advised `MADV_HUGEPAGE` (numpy does this for large arrays), so it takes 2 MiB "
      "faults instead of 4 KiB ones.")
    w("- Memory (`bench_mem`): see that section. Decode once (`bench_decode`), daemon under "
      "load (`bench_daemon_load`), save (`bench_save`) likewise.")
    w("- Raw data: `%s/results.txt` (one RESULT line per measurement) and `run.log`." %
      repo_rel(env.get("data_dir", "?")))
    if R.failed:
        w("- **Failed measurements in this run:** " + "; ".join(
            "`%s`" % r.get("cmd", "?").replace("+", " ") for r in R.failed))
    w("")

    text = keep_foreign_sections("\n".join(L) + "\n", a.out)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
