"""tensord against numpy: every dtype both ways with numpy's own np.save / np.load, npz both
ways, bfloat16 and float8 as MLX spells them, zero-copy views, views that outlive their dict,
resident memory when a 256 MiB file is loaded into numpy views, and GGML block arrays."""
import gc
import io
import json
import os
import weakref

import numpy as np
import pytest

import tdtest
import tensord

DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64", "complex64", "complex128"]
SHAPES = [(), (0,), (5,), (2, 3, 4), (4, 0, 3)]


def sample(dtype, shape, seed=0):
    """Values that use every byte of the type: extremes, negative numbers, NaN and infinities."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        v = rng.integers(0, 2, n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        v = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        v[:2] = [info.min, info.max][:len(v[:2])]
    elif dt.kind == "f":
        v = (rng.standard_normal(n) * 1000).astype(dt)
        special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dt).max,
                            np.finfo(dt).tiny / 2], dtype=dt)
        v[:min(n, len(special))] = special[:n]
    else:
        v = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    return v.reshape(shape)


def same(a, b):
    """Same dtype, shape and bytes (NaN payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_writes_tensord_reads(tmp_path, dtype):
    for k, shape in enumerate(SHAPES):
        v = sample(dtype, shape, k)
        variants = {"c": v, "fortran": v.copy(order="F")}
        if np.dtype(dtype).itemsize > 1:
            variants["big-endian"] = v.astype(np.dtype(dtype).newbyteorder(">"))
        for name, arr in variants.items():
            p = tmp_path / ("%s-%d-%s.npy" % (dtype, k, name))
            np.save(p, arr)
            a = tensord.load(str(p), mode="embedded")
            assert isinstance(a, tensord.Array)
            assert a.dtype == dtype and a.shape == shape and a.readonly
            same(a, v)
            # C order is viewed in the mapping; the others are decoded (into memory of their
            # own) when their bytes differ from C order.
            if name == "c" or (name == "fortran" and sum(d > 1 for d in shape) <= 1):
                assert a.provenance == "embedded", (name, shape)
            elif a.size > 1 or name == "big-endian" and a.size:
                assert a.provenance == "owned", (name, shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensord_writes_numpy_reads(tmp_path, dtype):
    for k, shape in enumerate(SHAPES):
        v = sample(dtype, shape, k)
        inputs = {"c": v, "fortran": v.copy(order="F")}
        if np.dtype(dtype).itemsize > 1:
            inputs["big-endian"] = v.astype(np.dtype(dtype).newbyteorder(">"))
        if v.ndim == 3:
            inputs["strided"] = np.repeat(v, 2, axis=2)[:, :, ::2]
            inputs["transposed"] = np.ascontiguousarray(v.transpose(2, 0, 1)).transpose(1, 2, 0)
        for name, arr in inputs.items():
            assert np.array_equal(arr, v, equal_nan=v.dtype.kind in "fc")
            stem = tmp_path / ("%s-%d-%s" % (dtype, k, name))
            tensord.save(stem, arr)  # the extension is appended
            back = np.load(str(stem) + ".npy")
            assert back.flags.c_contiguous
            same(back, v)
            # And a tensord.Array saves as it is.
            tensord.save(str(stem) + "-again", tensord.load(str(stem) + ".npy"))
            same(np.load(str(stem) + "-again.npy"), v)


def test_npz_both_ways(tmp_path):
    arrays = {dt: sample(dt, (3, 4), i) for i, dt in enumerate(DTYPES)}
    for saver in (np.savez, np.savez_compressed):
        p = tmp_path / (saver.__name__ + ".npz")
        saver(p, *arrays.values())
        d = tensord.load(str(p))
        assert list(d) == ["arr_%d" % i for i in range(len(arrays))]
        for i, v in enumerate(arrays.values()):
            same(d["arr_%d" % i], v)
    for name, saver in (("stored", tensord.savez), ("deflated", tensord.savez_compressed)):
        p = tmp_path / name
        saver(p, arrays["int8"], arrays["float16"], **{k: v for k, v in arrays.items()})
        with np.load(str(p) + ".npz") as z:
            assert sorted(z.files) == sorted(["arr_0", "arr_1"] + list(arrays))
            same(z["arr_0"], arrays["int8"])
            same(z["arr_1"], arrays["float16"])
            for k, v in arrays.items():
                same(z[k], v)
        compression = {zi.compress_type for zi in __import__("zipfile").ZipFile(str(p) + ".npz")
                       .infolist()}
        assert compression == ({0} if name == "stored" else {8})


def test_bfloat16_is_v2(tmp_path):
    raw = np.array([0x3F80, 0xC000, 0x7F80, 0x0001, 0x7FC1], dtype="<u2")  # 1, -2, inf, tiny, NaN
    v2 = raw.view("V2")
    # tensord writes numpy's V2 as bfloat16, spelled '<V2' as MLX does.
    tensord.save(tmp_path / "bf", v2)
    with open(tmp_path / "bf.npy", "rb") as f:
        assert b"'descr': '<V2'" in f.read(128)
    a = tensord.load(str(tmp_path / "bf.npy"))
    assert a.dtype == "bfloat16"
    n = np.asarray(a)
    assert n.dtype == np.dtype("V2") and n.tobytes() == raw.tobytes()
    assert n.__array_interface__["data"][0] == a.__array_interface__["data"][0]  # no copy
    back = np.load(tmp_path / "bf.npy")
    assert back.dtype == np.dtype("V2") and back.tobytes() == raw.tobytes()
    # numpy's own V2 npy (descr '|V2') loads as bfloat16 too.
    np.save(tmp_path / "np_v2.npy", v2)
    assert tensord.load(str(tmp_path / "np_v2.npy")).dtype == "bfloat16"
    # The buffer protocol has no bfloat16: memoryview refuses, and says where to go.
    with pytest.raises(BufferError, match="__array_interface__"):
        memoryview(a)


def test_float8_is_u1(tmp_path):
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    p = tmp_path / "f8.safetensors"
    p.write_bytes(tdtest.safetensors_bytes([("e4m3", "F8_E4M3", (16, 16), codes.tobytes()),
                                            ("e5m2", "F8_E5M2", (256,), codes.tobytes())]))
    d = tensord.load(str(p))
    assert d["e4m3"].dtype == "float8_e4m3" and d["e5m2"].dtype == "float8_e5m2"
    for a, shape in ((d["e4m3"], (16, 16)), (d["e5m2"], (256,))):
        n = np.asarray(a)
        assert n.dtype == np.uint8 and n.shape == shape and n.tobytes() == codes.tobytes()
        assert memoryview(a).format == "B"
    tensord.save(tmp_path / "f8", d["e4m3"])
    with open(tmp_path / "f8.npy", "rb") as f:
        assert b"'descr': '|u1'" in f.read(128)
    same(np.load(tmp_path / "f8.npy"), codes)


def test_views_are_zero_copy_and_read_only(tmp_path):
    v = sample("float32", (64, 64))
    tensord.save_safetensors(tmp_path / "m", {"w": v})
    for mode in ("embedded",):
        a = tensord.load(str(tmp_path / "m.safetensors"), mode=mode)["w"]
        ptr = a.__array_interface__["data"][0]
        n1, n2 = np.asarray(a), np.array(a, copy=False)
        assert n1.__array_interface__["data"][0] == ptr == n2.__array_interface__["data"][0]
        assert np.shares_memory(n1, n2)
        assert not n1.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            n1[0, 0] = 1
        with pytest.raises(TypeError, match="read-only"):
            memoryview(a).cast("B")[0:1] = b"x"  # the view itself is read-only
        with pytest.raises(TypeError):
            io.BytesIO(b"x").readinto(a)  # asks for a writable buffer
        with pytest.raises(ValueError):
            n1.setflags(write=True)
        m = memoryview(a)
        assert m.readonly and m.format == "f" and m.shape == (64, 64) and m.c_contiguous
        same(n1, v)
    # A copy is writable and independent.
    c = a.copy()
    assert not c.readonly and c.provenance == "owned"
    nc = np.asarray(c)
    nc[0, 0] = 42
    assert np.asarray(a)[0, 0] == v[0, 0] and np.asarray(c)[0, 0] == 42


def test_view_outlives_its_dict(tmp_path):
    arrays = {"a": sample("float64", (100, 10)), "b": sample("int16", (7,))}
    for fmt, save in (("npz", lambda p: tensord.savez(p, **arrays)),
                      ("npz", lambda p: tensord.savez_compressed(p, **arrays)),
                      ("safetensors", lambda p: tensord.save_safetensors(p, arrays)),
                      ("gguf", lambda p: tensord.save_gguf(p, arrays))):
        stem = tmp_path / ("m-" + fmt)
        save(stem)
        d = tensord.load(str(stem) + "." + fmt)
        arr = d["a"]
        ref = weakref.ref(arr)
        view = np.asarray(arr)
        del d, arr
        gc.collect()
        assert ref() is not None, "the numpy view keeps its Array (and so the mapping) alive"
        same(view, arrays["a"])
        view2 = view[::3]  # a view of the view keeps it too
        del view
        gc.collect()
        same(view2, arrays["a"][::3])
        del view2
        gc.collect()
        assert ref() is None, "nothing holds the Array any more"


RSS_CHILD = r"""
import gc, json, sys
import numpy as np
import tensord

def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                fields[k] = int(v.split()[0]) * 1024
    return fields

path, how = sys.argv[1], sys.argv[2]
# Warm up: the first load of anything sets up what every later load reuses.
np.asarray(tensord.load(sys.argv[3]))
gc.collect()
before = status()
if how == "numpy-copy":
    views = [np.load(path)]
else:
    r = tensord.load(path, mode=how)
    views = [np.asarray(a) for a in (r.values() if isinstance(r, dict) else [r])]
after = status()
first, last = float(views[0].reshape(-1)[0]), float(views[0].reshape(-1)[-1])
print(json.dumps({"before": before, "after": after, "nbytes": sum(v.nbytes for v in views),
                  "first": first, "last": last,
                  "provenance": [a.provenance for a in (r.values() if isinstance(r, dict) else [r])]
                  if how != "numpy-copy" else None}))
"""


def test_rss_growth_256mib_into_numpy_views(tmp_path, daemon):
    n = 64 << 20  # int32: 256 MiB
    p = tmp_path / "big.npy"
    m = np.lib.format.open_memmap(p, mode="w+", dtype=np.int32, shape=(n,))
    for i in range(0, n, 1 << 24):
        m[i:i + (1 << 24)] = np.arange(i, min(n, i + (1 << 24)), dtype=np.int32)
    m.flush()
    del m
    st = tmp_path / "big.safetensors"
    tensord.save_safetensors(st, {"w": tensord.load(str(p))})
    small = tmp_path / "small.npy"
    np.save(small, np.zeros(4, np.float32))
    env = {"TENSORD_SOCKET": daemon.socket}
    results = {}
    for path, how in ((p, "embedded"), (p, "daemon"), (st, "embedded"), (st, "daemon"),
                      (p, "numpy-copy")):
        r = tdtest.python_json(RSS_CHILD, path, how, small, env=env)
        assert r["nbytes"] == 256 << 20
        assert (r["first"], r["last"]) == (0.0, float(n - 1))
        growth = r["after"]["VmRSS"] - r["before"]["VmRSS"]
        results[(path.suffix, how)] = growth
        if how == "numpy-copy":
            # The control: a copying load grows by the whole file, so the measure sees copies.
            assert growth >= 250 << 20, r
        else:
            assert r["provenance"] == [how], r
            # Two pages touched (first and last element), the header, bookkeeping.
            assert growth < 1 << 20, "%s %s: RSS grew by %d bytes: %s" % (path.name, how,
                                                                         growth, r)
    print("RSS growth, bytes:", results)


def q4_0_blocks(values_per_row, rows, seed=0):
    """Random q4_0 blocks (fp16 scale, 16 bytes of nibbles) and their float32 values, by the
    block layout: element j is (low nibble of byte j) - 8, element j + 16 the high nibble."""
    rng = np.random.default_rng(seed)
    nb = rows * values_per_row // 32
    d = (rng.standard_normal(nb) * 0.1).astype(np.float16)
    qs = rng.integers(0, 256, (nb, 16), dtype=np.uint8)
    raw = b"".join(d[i].tobytes() + qs[i].tobytes() for i in range(nb))
    q = np.concatenate([(qs & 0xF).astype(np.int32) - 8, (qs >> 4).astype(np.int32) - 8], axis=1)
    values = (q.astype(np.float32) * d.astype(np.float32)[:, None]).reshape(rows, values_per_row)
    return raw, values


def test_gguf_block_arrays(tmp_path):
    raw, values = q4_0_blocks(64, 3)
    p = tmp_path / "q.gguf"
    p.write_bytes(tdtest.gguf_bytes([("blk.0.weight", tdtest.GGML_Q4_0, (64, 3), raw)]))
    a = tensord.load(str(p))["blk.0.weight"]
    assert (a.dtype, a.shape, a.nbytes) == ("q4_0", (3, 64), len(raw))
    rows = np.asarray(a)  # the stored blocks, as uint8 rows, without a copy
    assert rows.dtype == np.uint8 and rows.shape == (3, 2 * 18) and rows.tobytes() == raw
    f32 = a.dequantize()
    assert (f32.dtype, f32.shape, f32.readonly) == ("float32", (3, 64), False)
    assert f32.provenance in ("owned", "caller")  # memory of its own, not in any mapping
    same(f32, values)
    same(a.dequantize("float16"), values.astype(np.float16))
    bf = np.asarray(a.dequantize("bfloat16")).view("<u2")
    # Round to nearest even from the float32 values.
    bits = values.view("<u4")
    want = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    assert np.array_equal(bf, want)
    same(tensord.load(str(p), dequantize="float32")["blk.0.weight"], values)
    with pytest.raises(tensord.DtypeError, match="float32"):
        f32.dequantize()
    with pytest.raises(ValueError, match="int8"):
        a.dequantize("int8")
    # A block array saves as it is into GGUF (lossless), and is refused by npy with a message.
    tensord.save_gguf(tmp_path / "again", {"blk.0.weight": a})
    again = tensord.load(str(tmp_path / "again.gguf"))["blk.0.weight"]
    assert again.dtype == "q4_0" and np.asarray(again).tobytes() == raw
    with pytest.raises(tensord.DtypeError) as e:
        tensord.save(tmp_path / "blocks", a)
    assert "q4_0" in str(e.value)
