#!/usr/bin/python3
"""tests/data/regenerate.py - rebuilds the reference files of tests/data, byte for byte, and
checks them against MANIFEST.json.

    tests/data/regenerate.py [--check] [--oracle LIB]

Rebuilt (README.md says how each was made):
  npy/*.npy                 numpy (Debian 12's /usr/bin/python3, numpy 1.24.2)
  npz/*.npz                 numpy and zipfile
  safetensors/*             numpy and a writer from the specification, here
  gguf/*.gguf               llama.cpp's own GGUF writer (gguf_set_*, gguf_add_tensor,
                            gguf_write_to_file) and quantizer (ggml_quantize_chunk), from
                            libggml-base.so, the oracle of the tests; nested_array.gguf, which
                            llama.cpp cannot write (arrays of arrays), is packed here by hand
  gguf/*.gguf.*.f32.npy     llama.cpp's to_float of each quantized tensor, saved by numpy
Not rebuilt: pywt/* (PyWavelets' files) and MANIFEST.json (see README.md).

Without --check, the files are written into tests/data. With --check, they are written into a
temporary directory and compared with tests/data. Either way every file MANIFEST.json lists must
match it: size, SHA-256, and the SHA-256 of every tensor's bytes. The oracle is --oracle, else
$TD_ORACLE_LIB, else where scripts/install-oracle.sh puts it; without it the GGUF files are only
checked against MANIFEST.json, and the script says so and exits 77 (ctest's skip).
Exits 1 on any difference. ctest runs it with --check (test_data).
"""
import ctypes
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261128  # np.random.default_rng([SEED, k]), one k per group of files


def save_npy(path, a):
    with open(path, 'wb') as f:
        np.save(f, a)


# ---- npy ---------------------------------------------------------------------------------------

def make_npy(out):
    rng = np.random.default_rng([SEED, 20])
    files = {}
    files['big_endian_f4'] = rng.standard_normal((3, 4)).astype('>f4')
    files['fortran_f8'] = np.asfortranarray(rng.standard_normal((4, 3)))
    files['bool'] = rng.random((2, 3, 4)) < 0.5
    files['complex64'] = (rng.standard_normal(6) + 1j * rng.standard_normal(6)).astype(np.complex64)
    files['float16'] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, 65504, 1.0, -2.5, 0.333],
                                dtype=np.float16).reshape(2, 5)
    files['scalar_0d'] = np.array(-1234567890123, dtype=np.int64)
    files['empty_0x3'] = np.zeros((0, 3), np.float32)
    os.makedirs(os.path.join(out, 'npy'), exist_ok=True)
    for name, a in files.items():
        save_npy(os.path.join(out, 'npy', name + '.npy'), a)


# ---- npz ---------------------------------------------------------------------------------------

def write_npz(path, arrays, method):
    # np.savez's members (npy written into a member opened with force_zip64=True), with a fixed
    # timestamp instead of the clock's.
    with zipfile.ZipFile(path, 'w', compression=method) as z:
        for key, a in arrays.items():
            zi = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = method
            with z.open(zi, 'w', force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)


def make_npz(out):
    rng = np.random.default_rng([SEED, 21])
    positional = {'arr_0': rng.integers(-1000, 1000, (3, 4), dtype=np.int32),
                  'arr_1': rng.standard_normal(5).astype(np.float32)}
    named = {'weight': rng.standard_normal((4, 6)).astype(np.float32),
             'bias': rng.standard_normal(6),
             'big_endian_i4': np.array([1, -2, 300000, -2**31], dtype='>i4'),
             'fortran_i16': np.asfortranarray(rng.integers(-300, 300, (3, 2), dtype=np.int16)),
             'step': np.array(42, dtype=np.int64)}
    named['complex128'] = rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2))
    named['u16'] = np.array([0, 1, 65535], dtype=np.uint16)
    compressed = {'emb': rng.standard_normal((10, 8)).astype(np.float32),
                  'ids': np.arange(-7, 23, 3, dtype=np.int64),
                  'flags': rng.random(10) < 0.25,
                  'half': rng.standard_normal((3, 3)).astype(np.float16),
                  'zeros': np.zeros((64, 16)),
                  'c64': np.array([1 + 2j, -3.5 - 0.25j], dtype=np.complex64),
                  'empty': np.zeros(0, np.uint8)}
    os.makedirs(os.path.join(out, 'npz'), exist_ok=True)
    write_npz(os.path.join(out, 'npz', 'positional.npz'), positional, zipfile.ZIP_STORED)
    write_npz(os.path.join(out, 'npz', 'named.npz'), named, zipfile.ZIP_STORED)
    write_npz(os.path.join(out, 'npz', 'compressed.npz'), compressed, zipfile.ZIP_DEFLATED)


# ---- safetensors -------------------------------------------------------------------------------

ST_DTYPES = {'float64': 'F64', 'float32': 'F32', 'float16': 'F16', 'int64': 'I64', 'int32': 'I32',
             'int16': 'I16', 'int8': 'I8', 'uint64': 'U64', 'uint32': 'U32', 'uint16': 'U16',
             'uint8': 'U8', 'bool': 'BOOL'}


def st_tensor(name, a, dtype=None):
    return name, dtype or ST_DTYPES[a.dtype.name], list(a.shape), np.ascontiguousarray(a).tobytes()


def write_safetensors(path, tensors, metadata=None, data_order=None):
    """A writer from the specification: the header is compact JSON (non-ASCII as raw UTF-8) in
    the order given, padded with spaces to a multiple of 8; data_order (names) lays the data out
    in another order than the header's."""
    names = [t[0] for t in tensors]
    by_name = {t[0]: t for t in tensors}
    offsets, at = {}, 0
    for n in data_order or names:
        offsets[n] = [at, at + len(by_name[n][3])]
        at += len(by_name[n][3])
    header = {} if metadata is None else {'__metadata__': metadata}
    for name, dtype, shape, _ in tensors:
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': offsets[name]}
    h = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode()
    h += b' ' * (-(8 + len(h)) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(by_name[n][3] for n in data_order or names))


def to_bf16(a):
    """float32 -> bfloat16, rounding to nearest even; a NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    out = ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def full_range(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def make_safetensors(out):
    d = os.path.join(out, 'safetensors')
    os.makedirs(d, exist_ok=True)

    rng = np.random.default_rng([SEED, 1])
    u64 = full_range(rng, np.uint64, (5,))
    u64[:3] = [0, 2**64 - 1, 2**63]
    u32 = full_range(rng, np.uint32, (2, 3, 2))
    u16 = full_range(rng, np.uint16, (3, 5))
    for a in (u32, u16):
        a.flat[0], a.flat[-1] = 0, np.iinfo(a.dtype).max
    u8 = rng.permutation(256).astype(np.uint8).reshape(2, 128)  # every value once
    mask = rng.random((3, 7)) < 0.4
    write_safetensors(os.path.join(d, 'dtypes_unsigned_bool.safetensors'),
                      [st_tensor('u64.vec', u64), st_tensor('u32.cube', u32),
                       st_tensor('u16.mat', u16), st_tensor('u8.all_values', u8),
                       st_tensor('bool.mask', mask)])

    rng = np.random.default_rng([SEED, 2])
    i64 = full_range(rng, np.int64, (3, 2))
    i64.flat[:3] = [-2**63, 2**63 - 1, -1]
    i32 = full_range(rng, np.int32, (7,))
    i32[:3] = [-2**31, 2**31 - 1, 0]
    i16 = full_range(rng, np.int16, (2, 2, 3))
    i8 = full_range(rng, np.int8, (4, 6))
    for a in (i16, i8):
        a.flat[0], a.flat[-1] = np.iinfo(a.dtype).min, np.iinfo(a.dtype).max
    write_safetensors(os.path.join(d, 'dtypes_signed.safetensors'),
                      [st_tensor('i64', i64), st_tensor('i32', i32), st_tensor('i16', i16),
                       st_tensor('i8', i8)])

    # ±0, ±inf, NaN, 1, -2.5, the smallest subnormal and the largest value, then noise.
    rng = np.random.default_rng([SEED, 3])
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -2.5]
    f64 = rng.standard_normal((4, 3))
    f64.flat[:9] = special + [5e-324, np.finfo(np.float64).max]
    f32 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    f32.flat[:9] = special + [np.float32(1.4e-45), np.finfo(np.float32).max]
    bf = (rng.standard_normal((3, 5)) * 10).astype(np.float32)
    bf.flat[:8] = special + [np.float32(9.183549615799121e-41)]
    f16 = (rng.standard_normal((6, 5)) * 3).astype(np.float16)
    f16.flat[:9] = special + [6e-8, 65504]
    write_safetensors(os.path.join(d, 'dtypes_float.safetensors'),
                      [st_tensor('f64', f64), st_tensor('f32', f32),
                       st_tensor('bf16', to_bf16(bf), 'BF16'), st_tensor('f16', f16)])

    # f8_e4m3.all_codes[r][c] is the code 16 r + c
    rng = np.random.default_rng([SEED, 4])
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    e5m2 = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    write_safetensors(os.path.join(d, 'dtypes_float8.safetensors'),
                      [st_tensor('f8_e4m3.all_codes', codes, 'F8_E4M3'),
                       st_tensor('f8_e5m2.random', e5m2, 'F8_E5M2')])

    write_safetensors(os.path.join(d, 'scalar_and_empty.safetensors'),
                      [st_tensor('scalar', np.array(-3.75)),
                       st_tensor('empty_rows', np.zeros((0, 3), np.float32)),
                       st_tensor('empty_cols', np.zeros((4, 0), np.int16)),
                       st_tensor('scalar_u8', np.array(201, np.uint8)),
                       st_tensor('after', np.arange(0, 35, 7, dtype=np.uint8))])

    rng = np.random.default_rng([SEED, 5])
    meta = {'format': 'pt', 'producer': 'tensord testdata', 'empty': '',
            'unicode': '\u00b5-\u03a9 \u2192 \u2605 \U0001f600',
            'escapes': 'quote " backslash \\ tab \t newline \n ctrl \x01',
            'json_in_value': '{"a": [1, 2]}'}
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    write_safetensors(os.path.join(d, 'with_metadata.safetensors'),
                      [st_tensor('embed.weight', w), st_tensor('embed.bias', b)], meta)

    # the header says alpha, beta, gamma, delta; the data is delta, gamma, alpha, beta
    rng = np.random.default_rng([SEED, 6])
    alpha = rng.standard_normal((3, 4)).astype(np.float32)
    beta = rng.integers(-100, 100, 8, dtype=np.int8)
    gamma = rng.standard_normal(4).astype(np.float16)
    delta = rng.integers(-10**12, 10**12, (2, 2), dtype=np.int64)
    write_safetensors(os.path.join(d, 'data_order.safetensors'),
                      [st_tensor('alpha', alpha), st_tensor('beta', beta),
                       st_tensor('gamma', gamma), st_tensor('delta', delta)],
                      data_order=['delta', 'gamma', 'alpha', 'beta'])


# ---- gguf, through llama.cpp -------------------------------------------------------------------

# GGUF value types and the GGML tensor types used here.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
GGML = {'F32': 0, 'F16': 1, 'Q4_0': 2, 'Q4_1': 3, 'Q5_0': 6, 'Q5_1': 7, 'Q8_0': 8, 'I8': 24,
        'I16': 25, 'I32': 26, 'I64': 27, 'F64': 28, 'BF16': 30}


class GgmlInitParams(ctypes.Structure):
    _fields_ = [('mem_size', ctypes.c_size_t), ('mem_buffer', ctypes.c_void_p),
                ('no_alloc', ctypes.c_bool)]


class GgufInitParams(ctypes.Structure):
    _fields_ = [('no_alloc', ctypes.c_bool), ('ctx', ctypes.c_void_p)]


class Oracle:
    """llama.cpp's libggml-base.so through ctypes: its GGUF writer, quantizer and to_float."""

    def __init__(self, path):
        self.lib = g = ctypes.CDLL(path)
        P, S, I64p = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64)
        g.gguf_init_empty.restype = P
        g.gguf_init_from_file.restype = P
        g.gguf_init_from_file.argtypes = [S, GgufInitParams]
        g.gguf_free.argtypes = [P]
        scalar = {U8: ctypes.c_uint8, I8: ctypes.c_int8, U16: ctypes.c_uint16, I16: ctypes.c_int16,
                  U32: ctypes.c_uint32, I32: ctypes.c_int32, F32: ctypes.c_float,
                  BOOL: ctypes.c_bool, U64: ctypes.c_uint64, I64: ctypes.c_int64,
                  F64: ctypes.c_double}
        names = {U8: 'u8', I8: 'i8', U16: 'u16', I16: 'i16', U32: 'u32', I32: 'i32', F32: 'f32',
                 BOOL: 'bool', U64: 'u64', I64: 'i64', F64: 'f64'}
        self.setters = {}
        for t, ct in scalar.items():
            f = getattr(g, 'gguf_set_val_' + names[t])
            f.argtypes = [P, S, ct]
            self.setters[t] = f
        self.ctypes_of = scalar
        g.gguf_set_val_str.argtypes = [P, S, S]
        g.gguf_set_arr_data.argtypes = [P, S, ctypes.c_int, P, ctypes.c_size_t]
        g.gguf_set_arr_str.argtypes = [P, S, ctypes.POINTER(S), ctypes.c_size_t]
        g.ggml_tensor_overhead.restype = ctypes.c_size_t
        g.ggml_init.restype = P
        g.ggml_init.argtypes = [GgmlInitParams]
        g.ggml_free.argtypes = [P]
        g.ggml_new_tensor.restype = P
        g.ggml_new_tensor.argtypes = [P, ctypes.c_int, ctypes.c_int, I64p]
        g.ggml_set_name.restype = P
        g.ggml_set_name.argtypes = [P, S]
        g.gguf_add_tensor.argtypes = [P, P]
        g.gguf_set_tensor_data.argtypes = [P, S, P]
        g.gguf_write_to_file.restype = ctypes.c_bool
        g.gguf_write_to_file.argtypes = [P, S, ctypes.c_bool]
        g.ggml_quantize_init.argtypes = [ctypes.c_int]
        g.ggml_quantize_chunk.restype = ctypes.c_size_t
        g.ggml_quantize_chunk.argtypes = [ctypes.c_int, P, P, ctypes.c_int64, ctypes.c_int64,
                                          ctypes.c_int64, P]
        g.ggml_row_size.restype = ctypes.c_size_t
        g.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        g.ggml_fp32_to_bf16_row_ref.argtypes = [P, P, ctypes.c_int64]

    def quantize(self, gtype, rows):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        nrows, n = rows.shape
        out = np.zeros(self.lib.ggml_row_size(gtype, n) * nrows, np.uint8)
        self.lib.ggml_quantize_init(gtype)
        size = self.lib.ggml_quantize_chunk(gtype, rows.ctypes.data, out.ctypes.data, 0, nrows, n,
                                            None)
        assert size == out.size
        return out

    def to_bf16(self, a):
        a = np.ascontiguousarray(a, dtype=np.float32)
        out = np.zeros(a.shape, np.uint16)
        self.lib.ggml_fp32_to_bf16_row_ref(a.ctypes.data, out.ctypes.data, a.size)
        return out

    def to_float(self, kind, blocks, n):
        f = getattr(self.lib, 'dequantize_row_' + kind)
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        blocks = np.ascontiguousarray(blocks)
        out = np.zeros(n, np.float32)
        f(blocks.ctypes.data, out.ctypes.data, n)
        return out

    def write_gguf(self, path, kvs, tensors):
        """kvs: (key, type, value) in file order, arrays as (key, (ARR, elem type), list);
        tensors: (name, ggml type name, ne innermost first, bytes) in file order."""
        g = self.lib
        ctx = g.gguf_init_empty()
        keep = []
        for key, t, v in kvs:
            k = key.encode()
            if t == STR:
                g.gguf_set_val_str(ctx, k, v.encode())
            elif isinstance(t, tuple) and t[1] == STR:
                arr = (ctypes.c_char_p * len(v))(*[s.encode() for s in v])
                keep.append(arr)
                g.gguf_set_arr_str(ctx, k, arr, len(v))
            elif isinstance(t, tuple):
                arr = (self.ctypes_of[t[1]] * len(v))(*v)
                keep.append(arr)
                g.gguf_set_arr_data(ctx, k, t[1], ctypes.cast(arr, ctypes.c_void_p), len(v))
            else:
                self.setters[t](ctx, k, v)
        if any(key == 'general.alignment' for key, _, _ in kvs):
            # llama.cpp takes the alignment tensors are laid out with from the key only when it
            # reads a file: write the keys alone, and read them back.
            if not g.gguf_write_to_file(ctx, path.encode(), True):
                sys.exit('regenerate: llama.cpp could not write %s' % path)
            g.gguf_free(ctx)
            ctx = g.gguf_init_from_file(path.encode(), GgufInitParams(True, None))
        gctx = g.ggml_init(GgmlInitParams(len(tensors) * g.ggml_tensor_overhead() + 1024, None,
                                          True))
        for name, gtype, ne, data in tensors:
            arr = (ctypes.c_int64 * len(ne))(*ne)
            t = g.ggml_new_tensor(gctx, GGML[gtype], len(ne), arr)
            g.ggml_set_name(t, name.encode())
            g.gguf_add_tensor(ctx, t)
            buf = ctypes.create_string_buffer(data, len(data))
            keep.append(buf)
            g.gguf_set_tensor_data(ctx, name.encode(), buf)
        ok = g.gguf_write_to_file(ctx, path.encode(), False)
        g.ggml_free(gctx)
        g.gguf_free(ctx)
        if not ok:
            sys.exit('regenerate: llama.cpp could not write %s' % path)


def ne_of(a):
    return list(reversed(a.shape))


def make_gguf(out, orc):
    d = os.path.join(out, 'gguf')
    os.makedirs(d, exist_ok=True)
    arch = ('general.architecture', STR, 'tdtest')

    # all_types.gguf: one key of every value type, arrays of every element type, a tensor of
    # every plain GGML type.
    rng = np.random.default_rng([SEED, 10])
    bf = rng.standard_normal(32) * 4
    bf[:5] = [0.0, -0.0, np.inf, -np.inf, 1.0]
    bf16 = orc.to_bf16(bf.reshape(4, 8))
    f32 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    f16 = (rng.standard_normal((5, 6)) * 2).astype(np.float16)
    i8 = rng.integers(-128, 128, (3, 11), dtype=np.int8)
    ints = {}
    for dt, shape in ((np.int16, (7,)), (np.int32, (2, 2, 2, 3)), (np.int64, (5,))):
        info = np.iinfo(dt)
        ints[dt] = rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    f64 = rng.standard_normal((3, 3))
    kvs = [arch, ('general.name', STR, 'tensord all-types test'),
           ('test.u8', U8, 255), ('test.i8', I8, -128), ('test.u16', U16, 65535),
           ('test.i16', I16, -32768), ('test.u32', U32, 4294967295), ('test.i32', I32, -2**31),
           ('test.f32', F32, 0.1), ('test.bool_true', BOOL, True), ('test.bool_false', BOOL, False),
           ('test.string', STR, 'hello, GGUF: \u00b5 \u2192 \u2605 \U0001f600'),
           ('test.string_empty', STR, ''), ('test.u64', U64, 2**64 - 1), ('test.i64', I64, -2**63),
           ('test.f64', F64, 2.718281828459045), ('test.u8_after_f64', U8, 7),
           ('test.arr_i32', (ARR, I32), [1, -2, 3, 2**31 - 1, -2**31]),
           ('test.arr_f32', (ARR, F32), [0.5, -1.25, 3e10, 0.3]),
           ('test.arr_str', (ARR, STR), ['alpha', '', '\u03b3\u03ac\u03bc\u03bc\u03b1',
                                          'with "quotes"']),
           ('test.arr_bool', (ARR, BOOL), [True, False, True]),
           ('test.arr_u8', (ARR, U8), [0, 1, 254, 255]), ('test.arr_i8', (ARR, I8), [-128, 0, 127]),
           ('test.arr_u16', (ARR, U16), [0, 65535, 0x1234]),
           ('test.arr_i16', (ARR, I16), [-32768, 32767]),
           ('test.arr_u32', (ARR, U32), [2**32 - 1, 0, 0x12345678]),
           ('test.arr_u64', (ARR, U64), [2**64 - 1, 0, 1234567890123456789]),
           ('test.arr_i64', (ARR, I64), [-2**63, 2**63 - 1, -1]),
           ('test.arr_f64', (ARR, F64), [3.141592653589793, -0.0, 1e-300, 6.02214076e23])]
    tensors = [('blk.0.f32', 'F32', ne_of(f32), f32.tobytes()),
               ('blk.0.f16', 'F16', ne_of(f16), f16.tobytes()),
               ('blk.0.bf16', 'BF16', ne_of(bf16), bf16.tobytes()),
               ('blk.0.i8', 'I8', ne_of(i8), i8.tobytes()),
               ('blk.0.i16', 'I16', ne_of(ints[np.int16]), ints[np.int16].tobytes()),
               ('blk.0.i32', 'I32', ne_of(ints[np.int32]), ints[np.int32].tobytes()),
               ('blk.0.i64', 'I64', ne_of(ints[np.int64]), ints[np.int64].tobytes()),
               ('blk.0.f64', 'F64', ne_of(f64), f64.tobytes())]
    orc.write_gguf(os.path.join(d, 'all_types.gguf'), kvs, tensors)

    # aligned64.gguf: general.alignment 64, tensor sizes that are not multiples of it.
    rng = np.random.default_rng([SEED, 11])
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.integers(-128, 127, 7, dtype=np.int8)
    c = rng.standard_normal((2, 37)).astype(np.float16)
    i = rng.integers(-1000, 1000, 3, dtype=np.int64)
    orc.write_gguf(os.path.join(d, 'aligned64.gguf'),
                   [arch, ('general.alignment', U32, 64), ('general.name', STR, 'alignment 64')],
                   [('a.f32', 'F32', ne_of(a), a.tobytes()), ('b.i8', 'I8', ne_of(b), b.tobytes()),
                    ('c.f16', 'F16', ne_of(c), c.tobytes()),
                    ('d.i64', 'I64', ne_of(i), i.tobytes())])

    # q*.gguf: two quantized tensors each, and the float32 llama.cpp decodes them to.
    for k, (kind, file_type) in enumerate((('Q4_0', 2), ('Q4_1', 3), ('Q5_0', 8), ('Q5_1', 9),
                                           ('Q8_0', 7))):
        rng = np.random.default_rng([SEED, 100 + k])
        w0 = rng.standard_normal((4, 512)).astype(np.float32)
        w0[1, :32] = 0  # a first block of zeros: scale 0
        w0[2] = np.linspace(-3, 5, 512)
        w0[3] *= 250
        w1 = rng.uniform(-0.006, 0.014, (3, 768)).astype(np.float32)  # small, skewed positive
        name = kind.lower()
        blocks = [orc.quantize(GGML[kind], w) for w in (w0, w1)]
        orc.write_gguf(os.path.join(d, name + '.gguf'),
                       [arch, ('general.name', STR, 'quantized ' + kind),
                        ('general.quantization_version', U32, 2),
                        ('general.file_type', U32, file_type)],
                       [('blk.%d.weight' % j, kind, ne_of(w), q.tobytes())
                        for j, (w, q) in enumerate(zip((w0, w1), blocks))])
        for j, (w, q) in enumerate(zip((w0, w1), blocks)):
            ref = orc.to_float(name, q, w.size).reshape(w.shape)
            save_npy(os.path.join(d, '%s.gguf.blk.%d.weight.f32.npy' % (name, j)), ref)


def gguf_str(s):
    b = s.encode()
    return struct.pack('<Q', len(b)) + b


def make_nested_gguf(out):
    """Arrays of arrays (legal GGUF, rare; llama.cpp neither reads nor writes them), packed by
    hand the way GGUF writers lay a file out: header, keys, tensor infos, padding to 32, data."""
    def arr_i32(v):
        return struct.pack('<IQ', I32, len(v)) + struct.pack('<%di' % len(v), *v)

    def arr_str(v):
        return struct.pack('<IQ', STR, len(v)) + b''.join(gguf_str(s) for s in v)
    kv = gguf_str('general.architecture') + struct.pack('<I', STR) + gguf_str('tdtest')
    kv += gguf_str('test.nested_i32') + struct.pack('<IIQ', ARR, ARR, 3)
    kv += arr_i32([1, 2, 3]) + arr_i32([4]) + arr_i32([-5, 6])
    kv += gguf_str('test.nested_str') + struct.pack('<IIQ', ARR, ARR, 2)
    kv += arr_str(['a', 'b']) + arr_str(['c'])
    kv += gguf_str('test.after') + struct.pack('<II', U32, 42)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    info = gguf_str('x') + struct.pack('<I', 2) + struct.pack('<2Q', 3, 2)
    info += struct.pack('<IQ', GGML['F32'], 0)
    head = b'GGUF' + struct.pack('<IQQ', 3, 1, 4) + kv + info
    head += bytes(-len(head) % 32)
    data = x.tobytes()
    data += bytes(-len(data) % 32)
    with open(os.path.join(out, 'gguf', 'nested_array.gguf'), 'wb') as f:
        f.write(head + data)


# ---- checks ------------------------------------------------------------------------------------

def sha(b):
    return hashlib.sha256(b).hexdigest()


def le_c_bytes(a):
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<')).tobytes()


def check_manifest(root):
    """Every file MANIFEST.json lists has its size and SHA-256, and every tensor its bytes'."""
    m = json.load(open(os.path.join(root, 'MANIFEST.json')))
    bad = []
    for rel, e in m['files'].items():
        raw = open(os.path.join(root, rel), 'rb').read()
        if len(raw) != e['size'] or sha(raw) != e['sha256']:
            bad.append('%s: size or SHA-256 differs from MANIFEST.json' % rel)
            continue
        if e['format'] == 'npy':
            got = [le_c_bytes(np.load(io.BytesIO(raw)))]
        elif e['format'] == 'npz':
            with np.load(io.BytesIO(raw)) as z:
                got = [le_c_bytes(z[k]) for k in z.files]
        else:
            got = [raw[t['offset']:t['offset'] + t['nbytes']] for t in e['tensors']]
        want = [t['sha256'] for t in e['tensors']]
        if [sha(b) for b in got] != want:
            bad.append('%s: tensor bytes differ from MANIFEST.json' % rel)
    return len(m['files']), bad


def default_oracle():
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'tensord', 'gguf-oracle', 'node_modules', '@node-llama-cpp',
                        'linux-x64', 'bins', 'linux-x64', 'libggml-base.so')


def main(argv):
    check = '--check' in argv
    oracle = os.environ.get('TD_ORACLE_LIB') or default_oracle()
    if '--oracle' in argv:
        oracle = argv[argv.index('--oracle') + 1]
    out = tempfile.mkdtemp(prefix='tensord-data.') if check else HERE
    try:
        made = []
        make_npy(out)
        make_npz(out)
        make_safetensors(out)
        made += ['npy', 'npz', 'safetensors']
        if os.path.exists(oracle):
            make_gguf(out, Oracle(oracle))
            make_nested_gguf(out)
            made.append('gguf')
        else:
            print('regenerate: no llama.cpp oracle at %s: the GGUF files are only checked '
                  '(scripts/install-oracle.sh installs it)' % oracle)
        differ, compared = [], 0
        if check:
            for sub in made:
                for name in sorted(os.listdir(os.path.join(out, sub))):
                    a = open(os.path.join(out, sub, name), 'rb').read()
                    b = open(os.path.join(HERE, sub, name), 'rb').read()
                    compared += 1
                    if a != b:
                        differ.append('%s/%s: the rebuilt file differs' % (sub, name))
            print('regenerate: %d files rebuilt, %d identical to tests/data' %
                  (compared, compared - len(differ)))
        nfiles, bad = check_manifest(HERE)
        print('regenerate: %d files checked against MANIFEST.json, %d differ' % (nfiles, len(bad)))
        for line in differ + bad:
            print('  ' + line)
        if differ or bad:
            return 1
        return 0 if 'gguf' in made else 77
    finally:
        if check:
            shutil.rmtree(out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
