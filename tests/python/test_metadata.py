"""Metadata through Python: safetensors' dict[str, str], and GGUF values as Python values whose
GGUF types tensord.Metadata keeps, so that a file loaded and saved again is the same file."""
import struct

import numpy as np
import pytest

import tdtest
import tensord

W = {"w": np.arange(8, dtype=np.float32)}


def test_safetensors_metadata_is_str_to_str(tmp_path):
    meta = {"format": "pt", "empty": "", "text": "żółw \"quoted\" \\ \t\n \x01",
            "json": '{"a": [1, 2]}'}
    tensord.save_safetensors(tmp_path / "m", W, metadata=meta)
    arrays, back = tensord.load(str(tmp_path / "m.safetensors"), return_metadata=True)
    assert type(back) is dict and back == meta and list(back) == list(meta)
    tensord.save_safetensors(tmp_path / "n", W)
    assert tensord.load(str(tmp_path / "n.safetensors"), return_metadata=True)[1] == {}
    with pytest.raises(TypeError, match="'format'.*int"):
        tensord.save_safetensors(tmp_path / "bad", W, metadata={"format": 1})
    with pytest.raises(TypeError, match="dict"):
        tensord.save_safetensors(tmp_path / "bad", W, metadata=[("a", "b")])


def typed_metadata():
    m = tensord.Metadata()
    values = {
        "t.u8": (255, "uint8"), "t.i8": (-128, "int8"), "t.u16": (65535, "uint16"),
        "t.i16": (-32768, "int16"), "t.u32": (2**32 - 1, "uint32"), "t.i32": (-2**31, "int32"),
        "t.u64": (2**64 - 1, "uint64"), "t.i64": (-2**63, "int64"), "t.f32": (0.5, "float32"),
        "t.f64": (0.1, "float64"), "t.f32_from_int": (3, "float32"),
    }
    for k, (v, t) in values.items():
        m[k] = v
        m.types[k] = t
    m["general.name"] = "żółw"
    m["t.empty"] = ""
    m["t.bool"] = False
    m["t.tokens"] = ["<s>", "</s>", "ünï"]
    m["t.np_u16"] = np.arange(5, dtype=np.uint16)
    m["t.np_bool"] = np.array([True, False, True])
    m["t.np_scalar_i16"] = np.int16(-7)
    m["t.np_scalar_f64"] = np.float64(1e300)
    m["t.np_scalar_bool"] = np.bool_(True)
    m["t.ints"] = [1, 2, 3]
    m["t.floats"] = [1.5, 2, -0.25]
    m["t.nested"] = [[1, 2], [3]]
    m["t.nested_str"] = [["a"], ["b", "c"]]
    m["t.empty_list"] = []
    return m


def test_gguf_values_and_types(tmp_path):
    tensord.save_gguf(tmp_path / "m", W, metadata=typed_metadata())
    arrays, m = tensord.load(str(tmp_path / "m.gguf"), return_metadata=True)
    assert isinstance(m, tensord.Metadata) and isinstance(m, dict)
    t = m.types
    for k, v, ty in (("t.u8", 255, "uint8"), ("t.i8", -128, "int8"), ("t.u16", 65535, "uint16"),
                     ("t.i16", -32768, "int16"), ("t.u32", 2**32 - 1, "uint32"),
                     ("t.i32", -2**31, "int32"), ("t.u64", 2**64 - 1, "uint64"),
                     ("t.i64", -2**63, "int64"), ("t.f32", 0.5, "float32"),
                     ("t.f64", 0.1, "float64"), ("t.f32_from_int", 3.0, "float32"),
                     ("general.name", "żółw", "string"), ("t.empty", "", "string"),
                     ("t.bool", False, "bool"), ("t.np_scalar_i16", -7, "int16"),
                     ("t.np_scalar_f64", 1e300, "float64"), ("t.np_scalar_bool", True, "bool")):
        assert m[k] == v and type(m[k]) is type(v) and t[k] == ty, (k, m[k], t[k])
    assert m["t.tokens"] == ["<s>", "</s>", "ünï"] and t["t.tokens"] == "array[string]"
    for k, dtype, values in (("t.np_u16", "uint16", [0, 1, 2, 3, 4]),
                             ("t.np_bool", "bool", [True, False, True]),
                             ("t.ints", "int32", [1, 2, 3]),
                             ("t.floats", "float32", [1.5, 2.0, -0.25])):
        a = m[k]
        assert isinstance(a, tensord.Array) and a.dtype == dtype and t[k] == "array[%s]" % dtype
        assert np.asarray(a).tolist() == values
    assert [np.asarray(x).tolist() for x in m["t.nested"]] == [[1, 2], [3]]
    assert t["t.nested"] == "array[array]"
    assert m["t.nested_str"] == [["a"], ["b", "c"]]
    assert m["t.empty_list"] == [] and t["t.empty_list"] == "array[string]"
    # Loaded and saved again: the same file, byte for byte.
    tensord.save_gguf(tmp_path / "again", arrays, metadata=m)
    assert (tmp_path / "again.gguf").read_bytes() == (tmp_path / "m.gguf").read_bytes()
    # Without the kept types, plain Python values take gguf-py's defaults.
    tensord.save_gguf(tmp_path / "plain", W, metadata=dict(m))
    _, p = tensord.load(str(tmp_path / "plain.gguf"), return_metadata=True)
    assert p.types["t.u8"] == "int32" and p.types["t.u64"] == "uint64"
    assert p.types["t.i64"] == "int64" and p.types["t.f64"] == "float32"
    assert p.types["t.np_u16"] == "array[uint16]"  # arrays keep their dtype anyway


def test_gguf_from_an_independent_writer(tmp_path):
    """Values written byte by byte (GGUF v3 layout), read back as Python values and types."""
    def s(b):
        return struct.pack("<Q", len(b)) + b
    kvs = [("general.architecture", 8, s(b"llama")),
           ("a.u8", 0, struct.pack("<B", 200)),
           ("a.f32", 6, struct.pack("<f", 0.25)),
           ("a.f64", 12, struct.pack("<d", -2.5)),
           ("a.bool", 7, b"\x01"),
           ("a.i64s", 9, struct.pack("<IQ", 11, 2) + struct.pack("<2q", -1, 2**62)),
           ("a.strs", 9, struct.pack("<IQ", 8, 2) + s(b"x") + s(b"\xff\xfebad utf-8")),
           ("a.after", 4, struct.pack("<I", 42))]
    p = tmp_path / "ind.gguf"
    p.write_bytes(tdtest.gguf_bytes([("w", tdtest.GGML_F32, (4,), b"\0" * 16)], kvs))
    _, m = tensord.load(str(p), return_metadata=True)
    assert m["general.architecture"] == "llama" and m.types["general.architecture"] == "string"
    assert (m["a.u8"], m.types["a.u8"]) == (200, "uint8")
    assert (m["a.f32"], m.types["a.f32"]) == (0.25, "float32")
    assert (m["a.f64"], m.types["a.f64"]) == (-2.5, "float64")
    assert m["a.bool"] is True
    assert m["a.i64s"].dtype == "int64" and np.asarray(m["a.i64s"]).tolist() == [-1, 2**62]
    # Bytes that are not UTF-8 come back as surrogates, and go back out as the same bytes.
    assert m["a.strs"] == ["x", "\udcff\udcfebad utf-8"]
    assert m["a.after"] == 42
    tensord.save_gguf(tmp_path / "again", {"w": np.zeros(4, np.float32)}, metadata=m)
    _, m2 = tensord.load(str(tmp_path / "again.gguf"), return_metadata=True)
    assert m2 == {k: v for k, v in m.items() if k != "a.i64s"} | {"a.i64s": m2["a.i64s"]}
    assert m2.types == m.types


@pytest.mark.parametrize("value,kept,error,match", [
    (300, "uint8", OverflowError, "'k'.*300.*uint8"),
    (-1, "uint64", OverflowError, "'k'.*uint64"),
    (2**64, None, OverflowError, "'k'"),
    (["a", 1], None, TypeError, "'k'.*one type"),
    (b"bytes", None, TypeError, "'k'.*bytes"),
    (None, None, TypeError, "'k'.*NoneType"),
    ({"a": 1}, None, TypeError, "'k'.*dict"),
    (np.zeros((2, 2), np.float32), None, ValueError, "'k'.*one dimension"),
    (np.zeros(2, np.float16), None, tensord.DtypeError, "'k'.*float16"),
    (np.zeros(2, np.complex64), None, TypeError, "'k'.*complex64"),
])
def test_gguf_metadata_errors(tmp_path, value, kept, error, match):
    m = tensord.Metadata()
    m["k"] = value
    if kept:
        m.types["k"] = kept
    with pytest.raises(error, match=match):
        tensord.save_gguf(tmp_path / "bad", W, metadata=m)
    assert not (tmp_path / "bad.gguf").exists()


def test_gguf_metadata_nesting_is_bounded(tmp_path):
    deep = ["x"]
    for _ in range(20):
        deep = [deep]
    with pytest.raises(ValueError, match="nest"):
        tensord.save_gguf(tmp_path / "deep", W, metadata={"k": deep})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nest"):
        tensord.save_gguf(tmp_path / "loop", W, metadata={"k": loop})


def test_metadata_keys_and_types_attribute(tmp_path):
    with pytest.raises(TypeError, match="keys must be str"):
        tensord.save_gguf(tmp_path / "k", W, metadata={1: "x"})
    with pytest.raises(ValueError, match="NUL"):
        tensord.save_gguf(tmp_path / "k", W, metadata={"a\0b": "x"})
    m = tensord.Metadata(a=1)
    assert m == {"a": 1} and m.types == {}
    m.types = {"a": "uint16"}
    with pytest.raises(TypeError):
        m.types = ["a"]
    tensord.save_gguf(tmp_path / "t", W, metadata=m)
    assert tensord.load(str(tmp_path / "t.gguf"), return_metadata=True)[1].types == {
        "a": "uint16"}
