"""MLX's "Saving and Loading Arrays" page, its examples run as written with tensord in place of
mx and numpy arrays in place of mx.array (float32, MLX's default float type, so that the
outputs the page prints are what comes back).

The page's examples, verbatim:

   >>> a = mx.array([1.0])
   >>> mx.save("array", a)

   The array ``a`` will be saved in the file ``array.npy`` (notice the extension is
   automatically added). [...]

   >>> mx.load("array.npy", a)
   array([1], dtype=float32)

   >>> a = mx.array([1.0])
   >>> b = mx.array([2.0])
   >>> mx.savez("arrays", a, b=b)

   >>> mx.load("arrays.npz")
   {'b': array([2], dtype=float32), 'arr_0': array([1], dtype=float32)}

   >>> a = mx.array([1.0])
   >>> b = mx.array([2.0])
   >>> mx.save_safetensors("arrays", {"a": a, "b": b})
"""
import numpy as np
import pytest

import tensord as mx


def array(values):
    return np.array(values, dtype=np.float32)


def test_save_and_load_one_array(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = array([1.0])
    mx.save("array", a)
    assert (tmp_path / "array.npy").is_file() and not (tmp_path / "array").exists()
    # The page passes the array where load's format goes; it runs, and the array is ignored.
    with pytest.warns(UserWarning, match="ignored"):
        r = mx.load("array.npy", a)
    assert isinstance(r, mx.Array)
    n = np.asarray(r)
    assert n.dtype == np.float32 and n.tolist() == [1]
    assert repr(n) == "array([1.], dtype=float32)"


def test_savez_positional_and_keyword(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = array([1.0])
    b = array([2.0])
    mx.savez("arrays", a, b=b)
    d = mx.load("arrays.npz")
    assert isinstance(d, dict) and sorted(d) == ["arr_0", "b"]
    assert {k: (np.asarray(v).tolist(), np.asarray(v).dtype) for k, v in d.items()} == {
        "b": ([2], np.float32), "arr_0": ([1], np.float32)}
    # numpy agrees, as the page says savez is for compatibility with numpy.savez.
    with np.load("arrays.npz") as z:
        assert sorted(z.files) == ["arr_0", "b"]


def test_save_safetensors_takes_a_dict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = array([1.0])
    b = array([2.0])
    mx.save_safetensors("arrays", {"a": a, "b": b})
    d = mx.load("arrays.safetensors")
    assert {k: np.asarray(v).tolist() for k, v in d.items()} == {"a": [1], "b": [2]}


def test_save_gguf_takes_a_dict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = array([1.0])
    b = array([2.0])
    mx.save_gguf("arrays", {"a": a, "b": b})
    d = mx.load("arrays.gguf")
    assert {k: np.asarray(v).tolist() for k, v in d.items()} == {"a": [1], "b": [2]}


def test_the_extension_is_the_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mx.save("array", array([1.0]))
    # Appended on save, never on load; an unknown extension or format is a ValueError.
    with pytest.raises(mx.NotSupportedError) as e:
        mx.load("array")
    assert isinstance(e.value, ValueError) and "array" in str(e.value)
    with pytest.raises(ValueError, match="Unknown file format"):
        mx.load("array.npy", format="npx")
    (tmp_path / "array.bin").write_bytes((tmp_path / "array.npy").read_bytes())
    assert np.asarray(mx.load("array.bin", format="npy")).tolist() == [1]
    # os.PathLike works wherever a file name does.
    mx.save(tmp_path / "path", array([3.0]))
    assert np.asarray(mx.load(tmp_path / "path.npy")).tolist() == [3]
    # Metadata exists for safetensors and gguf only.
    with pytest.raises(mx.NoMetadataError):
        mx.load("array.npy", return_metadata=True)
