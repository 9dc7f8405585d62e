"""tensord.load through a real tensord: the modes (auto, embedded, daemon, TENSORD_SOCKET),
tensord.Client, two separate Python processes sharing one decode of a deflated npz, views that
outlive the daemon, leases given back, and the GIL released around loads and saves."""
import gc
import json
import os
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

import tdtest
import tensord


def model(tmp_path, name="model", compressed=True, n=3, size=1 << 20):
    rng = np.random.default_rng(7)
    arrays = {"layer%d.weight" % i: (rng.standard_normal(size // 4) * 0.02).astype(np.float32)
              for i in range(n)}
    (tensord.savez_compressed if compressed else tensord.savez)(tmp_path / name, **arrays)
    return str(tmp_path / (name + ".npz")), arrays


def test_modes(tmp_path, daemon, monkeypatch):
    path, arrays = model(tmp_path, n=1, size=4096)
    k = "layer0.weight"
    assert tensord.load(path, mode="daemon", socket=daemon.socket)[k].provenance == "daemon"
    assert tensord.load(path, mode="embedded", socket=daemon.socket)[k].provenance == "owned"
    assert tensord.load(path, socket=daemon.socket)[k].provenance == "daemon"  # auto
    nobody = str(tmp_path / "nobody.sock")
    assert tensord.load(path, socket=nobody)[k].provenance == "owned"  # auto falls back
    with pytest.raises(tensord.ConnectError) as e:
        tensord.load(path, mode="daemon", socket=nobody)
    assert isinstance(e.value, ConnectionError) and e.value.code_name == "TD_ECONNECT"
    # TENSORD_SOCKET, as for the C library.
    monkeypatch.setenv("TENSORD_SOCKET", daemon.socket)
    a = tensord.load(path)[k]
    assert a.provenance == "daemon"
    assert np.array_equal(np.asarray(a), arrays[k])
    monkeypatch.setenv("TENSORD_SOCKET", nobody)
    assert tensord.load(path)[k].provenance == "owned"
    with pytest.raises(ValueError, match="mode"):
        tensord.load(path, mode="remote")
    # What the daemon finds wrong with a file is reported as embedded mode reports it.
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'")
    errors = []
    for mode in ("embedded", "daemon"):
        with pytest.raises(tensord.Error) as e:
            tensord.load(str(bad), mode=mode, socket=daemon.socket)
        errors.append((type(e.value), str(bad) in str(e.value)))
    assert errors[0] == errors[1] and errors[0][1], errors


def test_client(tmp_path, daemon):
    path, arrays = model(tmp_path, compressed=False, n=2, size=4096)
    with pytest.raises(tensord.ConnectError):
        tensord.Client(str(tmp_path / "nobody.sock"))
    with tensord.Client(daemon.socket) as c:
        assert not c.closed
        c.ping()
        d = c.load(path)
        assert {k: a.provenance for k, a in d.items()} == {k: "daemon" for k in arrays}
        for k, v in arrays.items():
            assert np.array_equal(np.asarray(d[k]), v)
        f = c.status()["files"][0]
        assert f["name"] == path and f["format"] == "npz" and f["leases"] == 1
        assert f["tensors"] == 2 and f["mode"] == "map"
        assert c.evict(path) == {"entries": 0, "bytes": 0}  # held: not evicted
        d2, = [c.load(path, format="npz")]
        assert c.status()["files"][0]["leases"] == 2
        del d2
        gc.collect()
        assert c.status()["files"][0]["leases"] == 1  # the load's lease was given back
        with pytest.raises(tensord.NoMetadataError):
            c.load(path, return_metadata=True)
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.ping()
    # Arrays stay valid after the client is gone; dropping them ends the lease.
    for k, v in arrays.items():
        assert np.array_equal(np.asarray(d[k]), v)
    del d
    gc.collect()
    deadline = time.monotonic() + 10
    while daemon.file_status(path)["leases"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert daemon.file_status(path)["leases"] == 0
    with tensord.Client(daemon.socket) as c:
        r = c.evict()
        assert r["entries"] == 1 and r["bytes"] >= 0
        assert c.status()["entries"] == 0


def test_threads_share_a_client(tmp_path, daemon):
    path, arrays = model(tmp_path, compressed=False, n=2, size=4096)
    c = tensord.Client(daemon.socket)
    failures = []

    def work():
        try:
            for _ in range(50):
                d = c.load(path)
                assert np.array_equal(np.asarray(d["layer1.weight"]), arrays["layer1.weight"])
        except BaseException as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    c.close()  # closes once the loads in flight return; later calls fail cleanly
    for t in threads:
        t.join()
    for e in failures:
        assert isinstance(e, ValueError) and "closed" in str(e), repr(e)
    assert c.closed


CHILD = r"""
import json, sys, zlib
import numpy as np
import tensord

def mapping_of(ptr):
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return {"dev": parts[3], "inode": parts[4], "name": " ".join(parts[5:])}

d = tensord.load(sys.argv[1], mode="daemon")
out = {}
for k, a in d.items():
    out[k] = {"provenance": a.provenance, "crc": zlib.crc32(np.asarray(a).tobytes()),
              "map": mapping_of(a.__array_interface__["data"][0])}
print(json.dumps(out), flush=True)
sys.stdin.readline()  # holds the lease until the parent has looked
"""


def test_two_processes_share_one_decode(tmp_path, daemon):
    path, arrays = model(tmp_path, n=3, size=2 << 20)
    env = dict(os.environ, TENSORD_SOCKET=daemon.socket)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, path], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        seen = []
        for p in procs:
            line = p.stdout.readline()
            assert line, "child failed: %s" % p.stderr.read()
            seen.append(json.loads(line))
        for k, v in arrays.items():
            want = zlib.crc32(v.tobytes())
            for s in seen:
                assert s[k]["provenance"] == "daemon" and s[k]["crc"] == want
            # Both processes map the same buffer: the daemon's memfd, one inode.
            assert seen[0][k]["map"]["inode"] == seen[1][k]["map"]["inode"] != "0", seen
            assert "memfd" in seen[0][k]["map"]["name"], seen[0][k]["map"]
        st = daemon.status()
        f = daemon.file_status(path)
        assert st["decodes"] == 1, st
        assert (f["loads"], f["hits"], f["leases"]) == (2, 1, 2), f
        assert f["derived_bytes"] == sum(v.nbytes for v in arrays.values())
        ctl = daemon.tensorctl_status()
        assert ctl["decodes"] == 1 and ctl["files"][0]["loads"] == 2
    finally:
        for p in procs:
            p.stdin.close()
        codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 0]
    deadline = time.monotonic() + 10
    while daemon.file_status(path)["leases"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert daemon.file_status(path)["leases"] == 0


def test_views_outlive_the_daemon(tmp_path, daemon):
    path, arrays = model(tmp_path, n=2, size=1 << 16)
    d = tensord.load(path, mode="daemon", socket=daemon.socket)
    views = {k: np.asarray(a) for k, a in d.items()}
    del d
    assert daemon.stop() == 0
    gc.collect()
    for k, v in arrays.items():
        assert views[k].tobytes() == v.tobytes()
    with pytest.raises(tensord.ConnectError):
        tensord.load(path, mode="daemon", socket=daemon.socket)


def test_the_gil_is_released(tmp_path):
    """A thread saving and loading a deflated npz leaves the interpreter to other threads."""
    arrays = {"w": np.arange(8 << 20, dtype=np.float32)}  # 32 MiB
    spans = {}

    def work():
        t0 = time.monotonic()
        tensord.savez_compressed(tmp_path / "big", **arrays)
        t1 = time.monotonic()
        d = tensord.load(str(tmp_path / "big.npz"), mode="embedded")
        spans.update(save=(t0, t1), load=(t1, time.monotonic()), ok=np.asarray(d["w"])[-1])

    ticks = []
    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        ticks.append(time.monotonic())
    t.join()
    assert spans["ok"] == arrays["w"][-1]
    for what in ("save", "load"):
        lo, hi = spans[what]
        inside = sum(lo < x < hi for x in ticks)
        # Holding the GIL for the whole call would leave no tick inside it.
        assert inside > 100, "%s: %d ticks in %.3f s" % (what, inside, hi - lo)
