"""Helpers shared by the Python module's tests: the programs under test, a real tensord on a
temporary socket, separate Python processes, and writers of raw safetensors and GGUF bytes for
files numpy cannot make (float8, GGML blocks) and for hostile files.

The tests are run by CTest (test `python_module`), which sets PYTHONPATH to the build's python/
directory and TENSORD and TENSORCTL to the built daemon and tensorctl. Run by hand:

    PYTHONPATH=build/python TENSORD=build/daemon/tensord TENSORCTL=build/tensorctl \\
        /usr/bin/python3 -m pytest -q tests/python
"""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import tensord


def _program(var):
    path = os.environ.get(var)
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("%s must name the built program (it is %r); run the tests through "
                           "ctest, or see tests/python/tdtest.py" % (var, path))
    return path


TENSORD = _program("TENSORD")
TENSORCTL = _program("TENSORCTL")


class Daemon:
    """A tensord on SOCK (in a temporary directory), started by hand as its README says."""

    def __init__(self, directory, *args):
        self.socket = os.path.join(str(directory), "tensord.sock")
        self.log = os.path.join(str(directory), "tensord.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [TENSORD, "--socket", self.socket, "--log-level", "debug", *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                with tensord.Client(self.socket) as c:
                    c.ping()
                return
            except tensord.ConnectError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("tensord did not come up:\n" + self.log_text())
                time.sleep(0.02)

    def status(self):
        with tensord.Client(self.socket) as c:
            return c.status()

    def file_status(self, path):
        for f in self.status()["files"]:
            if f["name"] == str(path):
                return f
        raise AssertionError("tensord holds no entry for %s: %s" % (path, self.status()))

    def tensorctl_status(self):
        out = subprocess.run([TENSORCTL, "--socket", self.socket, "status", "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        """Stops the daemon; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def python(code, *args, env=None, timeout=300, **kw):
    """Runs code in a separate Python process (this interpreter, the same PYTHONPATH)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=e,
                          capture_output=True, text=True, timeout=timeout, **kw)


def python_json(code, *args, **kw):
    """Runs code in a separate process and parses the JSON it prints last."""
    r = python(code, *args, **kw)
    assert r.returncode == 0, "child failed (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- raw safetensors ------------------------------------------------------------------------

def safetensors_bytes(tensors, metadata=None, header=None):
    """tensors: list of (name, dtype string, shape, raw bytes), laid out in order. header, when
    given, replaces the JSON header whole (for hostile files)."""
    if header is None:
        h, off, data = {}, 0, b""
        if metadata is not None:
            h["__metadata__"] = metadata
        for name, dtype, shape, raw in tensors:
            h[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
            off += len(raw)
            data += raw
        header = json.dumps(h, separators=(",", ":")).encode()
    else:
        data = b"".join(t[3] for t in tensors)
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


# ---- raw GGUF -------------------------------------------------------------------------------

GGUF_UINT32, GGUF_STRING = 4, 8
GGML_F32, GGML_Q4_0 = 0, 2


def _gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(tensors, kvs=(), alignment=32, version=3):
    """tensors: list of (name, ggml type id, ne (innermost first), raw bytes); kvs: list of
    (key, type id, packed value bytes). Laid out as llama.cpp expects."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, packed in kvs:
        out += _gguf_str(key) + struct.pack("<I", t) + packed
    off = 0
    for name, t, ne, raw in tensors:
        out += _gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        out += struct.pack("<IQ", t, off)
        off += len(raw) + (-len(raw) % alignment)
    out += b"\0" * (-len(out) % alignment)
    for name, t, ne, raw in tensors:
        out += raw + b"\0" * (-len(raw) % alignment)
    return out
