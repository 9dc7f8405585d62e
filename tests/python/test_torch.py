"""tensord and torch (Debian's python3-torch): round trips of every torch dtype through every
format that holds it, bfloat16 included, zero-copy torch.from_dlpack, tensors that outlive their
Array, and the read-only policy (a write into a loaded view is a SIGSEGV of the writer, never a
change to the file; copy=True gives a tensor to write into).

torch is imported unconditionally: without it these tests fail, they are not skipped."""
import gc
import os
import warnings
import weakref

import numpy as np
import pytest
import torch

import tdtest
import tensord

TORCH_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
                torch.complex128]
# What each format holds (the library refuses the rest, naming the tensor and the dtype).
HOLDS = {
    "npy": set(TORCH_DTYPES),
    "npz": set(TORCH_DTYPES),
    "safetensors": set(TORCH_DTYPES) - {torch.complex128},
    "gguf": {torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
             torch.float32, torch.float64},
}
NAMES = {torch.bool: "bool", torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16",
         torch.int32: "int32", torch.int64: "int64", torch.float16: "float16",
         torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64",
         torch.complex64: "complex64", torch.complex128: "complex128"}


def sample(dtype, shape=(3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if not dtype.is_floating_point and not dtype.is_complex:
        info = torch.iinfo(dtype)
        t = torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)
        t.view(-1)[:2] = torch.tensor([info.min, info.max]).to(dtype)
        return t
    t = (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
    if dtype.is_floating_point:
        t.view(-1)[:4] = torch.tensor([float("inf"), -float("inf"), -0.0, float("nan")]).to(dtype)
    return t


def raw(t):
    """The bytes of a tensor (bit patterns: NaN == NaN)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def to_torch(a):
    """A zero-copy tensor of a loaded Array. torch 1.13 reads no DLPack bool (kDLBool came with
    DLPack 0.8), so bool goes through numpy's view, also without a copy."""
    if a.dtype == "bool":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return torch.from_numpy(np.asarray(a))
    return torch.from_dlpack(a)


def save(fmt, stem, tensors):
    if fmt == "npy":
        (t,) = tensors.values()
        tensord.save(stem, t)
    elif fmt == "npz":
        tensord.savez(stem, **tensors)
    elif fmt == "safetensors":
        tensord.save_safetensors(stem, tensors)
    else:
        tensord.save_gguf(stem, tensors)
    return str(stem) + "." + fmt


@pytest.mark.parametrize("fmt", ["npy", "npz", "safetensors", "gguf"])
@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=lambda d: NAMES[d])
def test_round_trip(tmp_path, fmt, dtype):
    t = sample(dtype)
    if dtype not in HOLDS[fmt]:
        with pytest.raises(tensord.DtypeError) as e:
            save(fmt, tmp_path / "x", {"weight": t})
        assert NAMES[dtype] in str(e.value) and "'weight'" in str(e.value)
        assert isinstance(e.value, TypeError)
        return
    path = save(fmt, tmp_path / "x", {"weight": t})
    r = tensord.load(path)
    a = r if fmt == "npy" else r["weight"]
    assert a.dtype == NAMES[dtype] and a.shape == tuple(t.shape)
    back = to_torch(a)
    assert back.dtype == dtype and back.shape == t.shape
    assert raw(back) == raw(t)
    assert back.data_ptr() == a.__array_interface__["data"][0], "torch made a copy"
    # And torch's tensor saves again, the same.
    path2 = save(fmt, tmp_path / "y", {"weight": back})
    r2 = tensord.load(path2)
    assert raw(to_torch(r2 if fmt == "npy" else r2["weight"])) == raw(t)


def test_bfloat16_through_npy_is_v2(tmp_path):
    t = sample(torch.bfloat16, (4, 4))
    tensord.save(tmp_path / "bf", t)
    n = np.load(tmp_path / "bf.npy")
    assert n.dtype == np.dtype("V2") and n.tobytes() == raw(t)
    back = torch.from_dlpack(tensord.load(str(tmp_path / "bf.npy")))
    assert back.dtype == torch.bfloat16 and raw(back) == raw(t)


def test_non_contiguous_tensors_are_saved_in_c_order(tmp_path):
    base = sample(torch.float32, (6, 8))
    for name, t in (("transposed", base.T), ("sliced", base[::2, 1::3]),
                    ("expanded", torch.arange(4.0).expand(3, 4)), ("bf16-T", base.bfloat16().T)):
        assert not t.is_contiguous()
        tensord.save_safetensors(tmp_path / name, {"t": t})
        back = torch.from_dlpack(tensord.load(str(tmp_path / name) + ".safetensors")["t"])
        assert raw(back) == raw(t.contiguous()), name


def test_tensor_outlives_array_and_dict(tmp_path):
    t = sample(torch.float32, (100, 100))
    tensord.save_safetensors(tmp_path / "m", {"w": t})
    d = tensord.load(str(tmp_path / "m.safetensors"))
    a = d["w"]
    ref = weakref.ref(a)
    back = torch.from_dlpack(a)
    del d, a
    gc.collect()
    assert ref() is None, "the tensor holds the data, not the Array object"
    assert raw(back) == raw(t)
    assert float(back[1:].sum()) == float(t[1:].sum())  # row 0 holds inf, -inf and NaN


def test_dlpack_protocol(tmp_path):
    t = sample(torch.float32)
    tensord.save(tmp_path / "a", t)
    a = tensord.load(str(tmp_path / "a.npy"))
    assert a.__dlpack_device__() == (1, 0)  # kDLCPU
    cap = a.__dlpack__()
    assert "dltensor" in repr(cap)
    del cap  # an unconsumed capsule frees its tensor
    with pytest.raises(BufferError):
        a.__dlpack__(stream=1)
    with pytest.raises(BufferError):
        a.__dlpack__(dl_device=(2, 0))
    assert raw(torch.from_dlpack(a.__dlpack__(dl_device=(1, 0), max_version=(1, 0)))) == raw(t)


def test_copy_gives_a_writable_tensor(tmp_path):
    t = sample(torch.float32)
    tensord.save(tmp_path / "a", t)
    a = tensord.load(str(tmp_path / "a.npy"))
    for w in (torch.from_dlpack(a.__dlpack__(copy=True)), torch.from_dlpack(a.copy())):
        assert w.data_ptr() != a.__array_interface__["data"][0]
        w += 1
        assert raw(w) == raw(t + 1)
    assert raw(torch.from_dlpack(a)) == raw(t)


WRITER = r"""
import sys, torch, tensord
a = tensord.load(sys.argv[1], mode=sys.argv[2])["w"]
assert a.provenance == sys.argv[2], a.provenance
t = torch.from_dlpack(a)
print("writing", flush=True)
t[0] = 42.0
print("wrote", flush=True)
"""


def test_writing_a_loaded_tensor_cannot_change_the_file(tmp_path, daemon):
    """The documented policy: DLPack 0.6 has no read-only flag, the pages are read-only."""
    t = sample(torch.float32, (16,))
    tensord.save_safetensors(tmp_path / "m", {"w": t})
    path = tmp_path / "m.safetensors"
    before = path.read_bytes()
    # Under ASan (a sanitizer build's test run), the fault must reach the kernel's default.
    asan = os.environ.get("ASAN_OPTIONS", "") + ":handle_segv=0"
    for mode in ("embedded", "daemon"):
        r = tdtest.python(WRITER, path, mode,
                          env={"TENSORD_SOCKET": daemon.socket, "ASAN_OPTIONS": asan})
        assert r.returncode == -11, (mode, r.returncode, r.stdout, r.stderr)  # SIGSEGV
        assert "writing" in r.stdout and "wrote" not in r.stdout
    assert path.read_bytes() == before
    assert raw(torch.from_dlpack(tensord.load(str(path))["w"])) == raw(t)


def test_unexportable_tensors_name_the_array(tmp_path):
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(tensord.DtypeError) as e:
        tensord.savez(tmp_path / "g", grad=t)
    assert "'grad'" in str(e.value) and "torch.float32" in str(e.value)
    assert "detach" in str(e.value)
    # Lists are not arrays.
    with pytest.raises(TypeError, match="arr_0.*list"):
        tensord.savez(tmp_path / "l", [1, 2, 3])
