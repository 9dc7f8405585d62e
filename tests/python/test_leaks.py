"""Nothing leaks: a separate process saves and loads through every function, path and error
thousands of times (embedded, through the daemon, through a Client; numpy, torch and DLPack),
and its resident memory must not grow with the count."""
import os
import shutil
import tempfile

import tdtest

LOOP = r"""
import gc, json, sys
import numpy as np
import torch
import tensord

sock = sys.argv[1]

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])

a = np.arange(1000, dtype=np.float32)
bf = torch.ones(10, dtype=torch.bfloat16)
md = tensord.Metadata({"a": 1, "b": [1.0, 2.0], "c": ["x", "y"], "d": np.arange(3),
                       "e": [[1], [2]]})
client = tensord.Client(sock)

def once():
    tensord.save("l1", a)
    tensord.savez_compressed("l2", a, b=bf)
    tensord.save_safetensors("l3", {"x": bf, "y": a[::2]}, {"k": "v"})
    tensord.save_gguf("l4", {"x": a, "t": torch.arange(4)}, md)
    np.asarray(tensord.load("l1.npy", mode="embedded")).sum()
    d = tensord.load("l2.npz", mode="daemon", socket=sock)
    torch.from_dlpack(d["b"]).sum()
    tensord.load("l3.safetensors", return_metadata=True)
    d4, m4 = client.load("l4.gguf", return_metadata=True)
    cap = d4["x"].__dlpack__(copy=True)
    del cap
    np.asarray(d4["x"].copy())
    for bad in (lambda: tensord.load("missing.npy"),
                lambda: tensord.save("bad", np.array([object()])),
                lambda: tensord.save_gguf("bad", {"x": a}, {"k": [1, "a"]}),
                lambda: tensord.savez("bad", a, arr_0=a),
                lambda: tensord.load("l1.npy", return_metadata=True)):
        try:
            bad()
        except (tensord.Error, TypeError, ValueError):
            pass
    client.status()

# Warm up until the allocator's arenas and caches have grown to their working size (a status
# dict with every figure needs about a thousand rounds), so that what is measured is growth
# with the count.
for _ in range(1500):
    once()
gc.collect()
before = rss_kib()
for _ in range(int(sys.argv[2])):
    once()
gc.collect()
print(json.dumps({"before": before, "after": rss_kib()}))
"""


def test_no_leaks(tmp_path, daemon):
    # Saves fsync; on tmpfs that costs nothing, so the loop can be long.
    where = tempfile.mkdtemp(dir="/dev/shm") if os.path.isdir("/dev/shm") else str(tmp_path)
    try:
        n = 4000
        r = tdtest.python_json(LOOP, daemon.socket, n, cwd=where)
    finally:
        if where != str(tmp_path):
            shutil.rmtree(where)
    growth = r["after"] - r["before"]
    print("RSS growth over %d iterations: %d KiB" % (n, growth))
    # One leaked 64-byte allocation per iteration would be 250 KiB.
    assert growth < 256, "RSS grew by %d KiB over %d iterations: %s" % (growth, n, r)
