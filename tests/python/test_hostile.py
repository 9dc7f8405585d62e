"""Hostile and broken input through Python: malformed files of every format (one case per kind
of defect), thousands of mutated files, in this process and through a real daemon, and objects
that pretend to be arrays. Each must end in a tensord.Error (or a TypeError/ValueError for bad
arguments) whose message names the file, the tensor and the field; none may crash the
interpreter."""
import io
import json
import random
import struct
import zipfile

import numpy as np
import pytest

import tdtest
import tensord


def npy_header(d, version=1):
    h = d.encode()
    h += b" " * (-(len(h) + 11) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<H", len(h)) + h


def npz(members, method=zipfile.ZIP_STORED):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return b.getvalue()


def npy_of(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def st_header(entries):
    return json.dumps(entries).encode()


def corrupt_crc():
    good = npy_of(np.arange(1000, dtype=np.int32))
    z = bytearray(npz([("w.npy", good)], zipfile.ZIP_DEFLATED))
    i = z.find(b"w.npy") + 5 + 10  # a byte of the deflated stream
    z[i] ^= 0x55
    return bytes(z)


def kv(key, t, packed):
    return (key, t, packed)


# (file name, bytes, exception class, what the message must name besides the file)
CASES = [
    ("magic.npy", b"\x93NUMPX\x01\x00" + b"\0" * 100, tensord.FormatError, ["magic"]),
    ("object.npy", npy_header("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }")
     + b"\0" * 16, tensord.DtypeError, ["descr", "'|O'"]),
    ("short.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }")
     + b"\0" * 16, tensord.TruncatedError, ["400", "16"]),
    ("negative.npy", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"),
     tensord.RangeError, ["shape[0]", "negative"]),
    ("overflow.npy", npy_header("{'descr': '<f8', 'fortran_order': False, "
                                "'shape': (4294967296, 4294967296, 16), }"),
     tensord.RangeError, ["shape", "overflow"]),
    ("header.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr'", tensord.TruncatedError, ["header"]),
    ("notzip.npz", b"PK\x03\x04" + b"\0" * 50, tensord.FormatError, ["zip"]),
    ("traversal.npz", npz([("../evil.npy", npy_of(np.arange(3)))]), tensord.FormatError,
     ["../evil.npy", ".."]),
    ("member.npz", npz([("w.npy", npy_of(np.arange(10, dtype=np.int32))[:60])]),
     tensord.TruncatedError, ["member w.npy", "header"]),
    ("crc.npz", corrupt_crc(), tensord.Error, ["w.npy"]),
    ("length.safetensors", struct.pack("<Q", 1 << 40) + b"{}", tensord.LimitError,
     ["header length", "1099511627776"]),
    ("json.safetensors", tdtest.safetensors_bytes([], header=b"{not json"), tensord.FormatError,
     ["JSON"]),
    ("overlap.safetensors", tdtest.safetensors_bytes(
        [("a", "F32", (2,), b"\0" * 8)],
        header=st_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})),
     tensord.Error, ["tensor 'b'", "data_offsets"]),
    ("dtype.safetensors", tdtest.safetensors_bytes([("w", "Q9", (2,), b"\0" * 8)]),
     tensord.DtypeError, ["tensor 'w'", "dtype", "Q9"]),
    ("size.safetensors", tdtest.safetensors_bytes(
        [("w", "F32", (3,), b"\0" * 8)],
        header=st_header({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})),
     tensord.FormatError, ["tensor 'w'", "data_offsets", "12"]),
    ("dup.safetensors", tdtest.safetensors_bytes(
        [("w", "U8", (1,), b"\0\0")],
        header=b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
               b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'),
     tensord.Error, ["duplicate", '"w"']),
    ("magic.gguf", b"GGUX" + b"\0" * 40, tensord.FormatError, ["magic", "GGUX"]),
    ("count.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0), tensord.FormatError,
     ["1152921504606846976 tensors"]),
    ("string.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 50)
     + b"k" * 64, tensord.Error, ["key"]),
    ("valuetype.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k"
     + struct.pack("<I", 99) + b"\0" * 8, tensord.FormatError, ["key 'k'", "type 99"]),
    ("alignment.gguf", tdtest.gguf_bytes([("w", 0, (4,), b"\0" * 16)],
                                         [kv("general.alignment", 4, struct.pack("<I", 3))]),
     tensord.FormatError, ["general.alignment", "3", "power of two"]),
    ("ggmltype.gguf", tdtest.gguf_bytes([("w", 77, (4,), b"\0" * 16)]), tensord.DtypeError,
     ["tensor 'w'", "77"]),
    ("offset.gguf", tdtest.gguf_bytes([("w", 0, (1 << 40,), b"\0" * 16)]),
     tensord.TruncatedError, ["tensor 'w'", "offset"]),
    ("empty.npy", b"", tensord.TruncatedError, ["empty"]),
]


@pytest.mark.parametrize("mode", ["embedded", "daemon"])
@pytest.mark.parametrize("name,data,cls,names", CASES, ids=[c[0] for c in CASES])
def test_hostile_file(tmp_path, request, mode, name, data, cls, names):
    p = tmp_path / name
    p.write_bytes(data)
    sock = request.getfixturevalue("daemon").socket if mode == "daemon" else None
    with pytest.raises(cls) as e:
        tensord.load(str(p), mode=mode, socket=sock)
    msg = str(e.value)
    assert str(p) in msg, msg
    for n in names:
        assert n in msg, (n, msg)
    assert isinstance(e.value, tensord.Error) and e.value.code < 0
    assert e.value.code_name.startswith("TD_E") and "\n" not in msg


def test_missing_and_unreadable_files(tmp_path, daemon):
    for mode in ("embedded", "daemon", "auto"):
        with pytest.raises(FileNotFoundError) as e:
            tensord.load(str(tmp_path / "missing.safetensors"), mode=mode, socket=daemon.socket)
        assert isinstance(e.value, tensord.FileNotFoundError) and e.value.errno == 2
        assert "missing.safetensors" in str(e.value)
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(tensord.Error, match="dir.npy"):
        tensord.load(str(tmp_path / "dir.npy"), mode="embedded")
    with pytest.raises(FileNotFoundError):
        tensord.save(tmp_path / "no" / "such" / "dir" / "a", np.zeros(2))


def test_error_classes_cover_every_code():
    assert len(tensord.ERRORS) == 24
    for name, cls in tensord.ERRORS.items():
        assert name.startswith("TD_E") and issubclass(cls, tensord.Error)
    assert issubclass(tensord.FileNotFoundError, FileNotFoundError)
    assert issubclass(tensord.FormatError, ValueError)
    assert issubclass(tensord.TruncatedError, tensord.FormatError)
    assert issubclass(tensord.DtypeError, TypeError)
    assert issubclass(tensord.ConnectError, ConnectionError)


def valid_files(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.integers(-100, 100, (5,), dtype=np.int16)
    m = tensord.Metadata({"general.name": "x", "k.ints": [1, 2, 3], "k.f": 0.5})
    paths = []
    np.save(tmp_path / "v.npy", a)
    paths.append(tmp_path / "v.npy")
    np.save(tmp_path / "vf.npy", np.asfortranarray(a.astype(">f4")))
    paths.append(tmp_path / "vf.npy")
    np.savez(tmp_path / "v.npz", a=a, b=b)
    paths.append(tmp_path / "v.npz")
    np.savez_compressed(tmp_path / "vc.npz", a=a, b=b)
    paths.append(tmp_path / "vc.npz")
    tensord.save_safetensors(tmp_path / "v", {"a": a, "b": b}, metadata={"m": "x"})
    paths.append(tmp_path / "v.safetensors")
    tensord.save_gguf(tmp_path / "v", {"a": a, "b": b}, metadata=m)
    paths.append(tmp_path / "v.gguf")
    return paths


def mutants(data, rng, n):
    """Random damage where parsers look: headers, counts, lengths; and truncations."""
    for _ in range(n):
        b = bytearray(data)
        kind = rng.random()
        if kind < 0.15:
            yield bytes(b[:rng.randrange(1, len(b))])
            continue
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(b), 512)) if rng.random() < 0.8 else rng.randrange(len(b))
            b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256), b[i] ^ 1])
        yield bytes(b)


def touch(result):
    """Reads every byte of what a load returned."""
    arrays = result[0] if isinstance(result, tuple) else result
    for a in (arrays.values() if isinstance(arrays, dict) else [arrays]):
        if a.dtype != "bfloat16" and a.nbytes:
            bytes(memoryview(a).cast("B"))
        np.asarray(a).tobytes()


@pytest.mark.parametrize("mode", ["embedded", "daemon"])
def test_mutated_files(tmp_path, request, mode):
    sock = request.getfixturevalue("daemon").socket if mode == "daemon" else None
    rng = random.Random(20261128 if mode == "embedded" else 7)
    per_file = 400 if mode == "embedded" else 120
    outcomes = {"loaded": 0, "refused": 0}
    for path in valid_files(tmp_path):
        data = path.read_bytes()
        for k, m in enumerate(mutants(data, rng, per_file)):
            p = path.with_name("m%d%s" % (k % 7, path.suffix))
            p.write_bytes(m)
            try:
                meta = path.suffix in (".safetensors", ".gguf")
                touch(tensord.load(str(p), mode=mode, socket=sock, return_metadata=meta))
                outcomes["loaded"] += 1
            except tensord.Error as e:
                assert str(p) in str(e), str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > outcomes["loaded"] / 10, outcomes
    print(mode, outcomes)


class Pretender:
    """An object whose __array_interface__ says what the test wants it to say."""

    def __init__(self, **ai):
        self.backing = np.arange(4, dtype=np.float32)
        self.__array_interface__ = dict(version=3, typestr="<f4", shape=(4,),
                                        data=(self.backing.ctypes.data, True), strides=None)
        self.__array_interface__.update(ai)


class BadDLPack:
    def __dlpack__(self, stream=None):
        return "not a capsule"

    def __dlpack_device__(self):
        return (1, 0)


def test_objects_pretending_to_be_arrays(tmp_path):
    p = tmp_path / "x"
    tensord.save(p, Pretender())  # a well-behaved one works
    assert np.load(str(p) + ".npy").tolist() == [0, 1, 2, 3]
    tensord.save(p, Pretender(typestr=">f4", strides=(-4,), data=(
        np.arange(4, dtype=">f4").ctypes.data + 12, True)))
    for bad, cls, match in (
            (Pretender(shape=(-4,)), ValueError, r"shape\[0\] is negative"),
            (Pretender(shape=(1 << 62, 1 << 62)), ValueError, "too large"),
            (Pretender(data=(0, True)), ValueError, "NULL"),
            (Pretender(shape=[4]), ValueError, "shape"),
            (Pretender(typestr="<q16"), TypeError, "q16"),
            (Pretender(typestr="|O8"), TypeError, "O8"),
            (Pretender(strides=(4, 4)), ValueError, "strides"),
            (Pretender(data=None), TypeError, "data"),
            (Pretender(mask=np.zeros(4, bool)), TypeError, "mask"),
            (BadDLPack(), TypeError, "capsule"),
            (object(), TypeError, "object.*not an array"),
            (np.array(["a", "b"]), TypeError, "<U1"),
            (np.array([object()]), TypeError, "object"),
            (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), TypeError, "arr"),
            (np.zeros(2, dtype=np.longdouble), TypeError, "float128")):
        with pytest.raises(cls, match=match):
            tensord.save(p, bad)
    with pytest.raises(tensord.DuplicateError, match="arr_0"):
        tensord.savez(p, np.zeros(1), arr_0=np.ones(1))
    with pytest.raises(TypeError, match="names must be str"):
        tensord.save_safetensors(p, {1: np.zeros(1)})
    with pytest.raises(ValueError, match="NUL"):
        tensord.save_safetensors(p, {"a\0b": np.zeros(1)})
    with pytest.raises(TypeError, match="dict"):
        tensord.save_gguf(p, [np.zeros(1)])
    with pytest.raises(TypeError, match="file"):
        tensord.savez()
