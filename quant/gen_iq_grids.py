#!/usr/bin/env python3
"""gen_iq_grids.py - derives the lookup tables of GGML's grid-based i-quants from llama.cpp.

The i-quant block types (iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s) store, per group
of 4 or 8 elements, an index into a fixed grid of small integer vectors, plus signs that are
either stored bit by bit or as a 7-bit index into a table of sign bytes. This script does not
carry those tables: it asks llama.cpp's own decoder for them. It loads libggml-base.so with
ctypes, builds blocks whose scale makes every element equal to its grid value (and whose signs
are all positive), decodes them with ggml's to_float, and reads the grid back out of the floats.
The sign table comes the same way, from blocks that use one known all-non-zero grid entry with
every 7-bit sign index. Each table that two types share is derived from both and must agree,
and the sign bytes iq2_s and iq3_s store directly are checked to negate element j for bit j.

usage: gen_iq_grids.py [--lib PATH] [--out PATH] [--check | --fixture]

  --lib    libggml-base.so (default: $TD_ORACLE_LIB, else the copy scripts/install-oracle.sh
           puts under ${XDG_CACHE_HOME:-~/.cache}/tensord/gguf-oracle)
  --out    the C file to write (default: iq_grids.c next to this script)
  --check  write nothing; exit 1 when the file's tables differ from what the library gives
  --fixture  print the known blocks of tests/unit/test_ggml_quants.c instead (fixed pseudo-
           random blocks of each grid i-quant and q8_1, with what ggml decodes them to)

Regenerate with:  python3 quant/gen_iq_grids.py && clang-format --dry-run -Werror quant/iq_grids.c
"""

import argparse
import ctypes
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
QK_K = 256

# ggml type ids (ggml.h enum ggml_type) and block sizes in bytes (ggml-common.h).
TYPES = {
    "iq2_xxs": (16, 66),
    "iq2_xs": (17, 74),
    "iq3_xxs": (18, 98),
    "iq1_s": (19, 50),
    "iq3_s": (21, 110),
    "iq2_s": (22, 82),
    "iq1_m": (29, 56),
}


def default_lib():
    env = os.environ.get("TD_ORACLE_LIB")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tensord/gguf-oracle/node_modules/@node-llama-cpp/linux-x64/bins",
                        "linux-x64/libggml-base.so")


TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


class TypeTraits(ctypes.Structure):
    """struct ggml_type_traits of ggml.h (checked against ggml_blck_size / ggml_type_size)."""
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


class Oracle:
    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_blck_size.restype = ctypes.c_int64
        self.lib.ggml_blck_size.argtypes = [ctypes.c_int]
        self.lib.ggml_type_size.restype = ctypes.c_size_t
        self.lib.ggml_type_size.argtypes = [ctypes.c_int]
        self.to_float = {}
        for name, (tid, bb) in TYPES.items():
            tr = self.lib.ggml_get_type_traits(tid).contents
            if (tr.type_name.decode() != name or tr.blck_size != QK_K or tr.type_size != bb
                    or self.lib.ggml_blck_size(tid) != QK_K
                    or self.lib.ggml_type_size(tid) != bb):
                sys.exit("%s: type %d is not %s with blocks of %d bytes, or struct "
                         "ggml_type_traits has another layout" % (path, tid, name, bb))
            sym = ctypes.cast(getattr(self.lib, "dequantize_row_" + name), ctypes.c_void_p).value
            if not tr.to_float or tr.to_float != sym:
                sys.exit("%s: %s: to_float is not dequantize_row_%s" % (path, name, name))
            self.to_float[name] = TO_FLOAT(tr.to_float)

    def decode(self, name, blocks):
        """ggml's to_float of the concatenated blocks: a list of floats."""
        bb = TYPES[name][1]
        raw = b"".join(blocks)
        assert len(raw) == bb * len(blocks)
        src = ctypes.create_string_buffer(raw, len(raw))
        n = QK_K * len(blocks)
        out = (ctypes.c_float * n)()
        self.to_float[name](ctypes.cast(src, ctypes.c_void_p), out, n)
        return list(out)


def f16(v):
    return struct.pack("<e", v)


def as_int(name, what, v, lo, hi):
    """v must be an exact integer in [lo, hi]: the grid read back is exact or the crafting is
    wrong, and then we stop rather than write a table."""
    if v != int(v) or not lo <= v <= hi:
        sys.exit("%s: %s decodes to %r, not an integer in [%d, %d]" % (name, what, v, lo, hi))
    return int(v)


def chunks(seq, n):
    return [seq[i:i + n] for i in range(0, len(seq), n)]


# ---- one function per type: blocks that spell out every grid index, and the grid read back ----

def grid_iq2_xxs(o):
    # block: half d; u16 qs[32]. Per 32 elements, 8 bytes: 4 index bytes (8 elements each), then
    # a u32 of four 7-bit sign indices and a 4-bit scale s: db = d * (0.5 + s) * 0.25.
    # d = 8, s = 0: db = 1.
    blocks, order = [], []
    for idx in chunks(list(range(256)), 32):
        b = f16(8.0)
        for g in chunks(idx, 4):
            b += bytes(g) + struct.pack("<I", 0)
            order += g
        blocks.append(b)
    y = o.decode("iq2_xxs", blocks)
    return read_grid("iq2_xxs", y, order, 256, 8, 0, 255, absolute=True)


def grid_iq2_xs(o):
    # block: half d; u16 qs[32] (9-bit index, 7-bit sign index); u8 scales[8] (two 4-bit s per
    # 32 elements): db = d * (0.5 + s) * 0.25. d = 8, s = 0: db = 1.
    blocks, order = [], []
    for idx in chunks(list(range(512)), 32):
        b = f16(8.0) + b"".join(struct.pack("<H", k) for k in idx) + bytes(8)
        order += idx
        blocks.append(b)
    y = o.decode("iq2_xs", blocks)
    return read_grid("iq2_xs", y, order, 512, 8, 0, 255, absolute=True)


def grid_iq2_s(o):
    # block: half d; u8 qs[32] (index bits 0-7); u8 signs[32] (one bit per element); u8 qh[8]
    # (index bits 8-9, two per group of 8); u8 scales[8]: dl = d * (0.5 + s) * 0.25.
    blocks, order = [], []
    for idx in chunks(list(range(1024)), 32):
        qs = bytes(k & 255 for k in idx)
        qh = bytes(sum(((k >> 8) & 3) << (2 * l) for l, k in enumerate(g)) for g in chunks(idx, 4))
        blocks.append(f16(8.0) + qs + bytes(32) + qh + bytes(8))
        order += idx
    y = o.decode("iq2_s", blocks)
    return read_grid("iq2_s", y, order, 1024, 8, 0, 255, absolute=False)


def grid_iq3_xxs(o):
    # block: half d; u8 qs[64] (one index per 4 elements); u32 scales_and_signs[8] (four 7-bit
    # sign indices, 4-bit s): db = d * (0.5 + s) * 0.5. d = 4, s = 0: db = 1.
    blocks, order = [], []
    for idx in chunks(list(range(256)), 64):
        blocks.append(f16(4.0) + bytes(idx) + bytes(32))
        order += idx
    y = o.decode("iq3_xxs", blocks)
    return read_grid("iq3_xxs", y, order, 256, 4, 0, 255, absolute=True)


def grid_iq3_s(o):
    # block: half d; u8 qs[64] (index bits 0-7, one per 4 elements); u8 qh[8] (bit 8, one bit
    # per index); u8 signs[32]; u8 scales[4] (4-bit s per 32 elements): db = d * (1 + 2 s).
    blocks, order = [], []
    for idx in chunks(list(range(512)), 64):
        qs = bytes(k & 255 for k in idx)
        qh = bytes(sum(((k >> 8) & 1) << m for m, k in enumerate(g)) for g in chunks(idx, 8))
        blocks.append(f16(1.0) + qs + qh + bytes(32) + bytes(4))
        order += idx
    y = o.decode("iq3_s", blocks)
    return read_grid("iq3_s", y, order, 512, 4, 0, 255, absolute=False)


def grid_iq1_s(o):
    # block: half d; u8 qs[32] (index bits 0-7); u16 qh[8]: per 32 elements, index bits 8-10 of
    # its four groups (3 bits each), a 3-bit s (bits 12-14) and the delta sign (bit 15):
    # y = d * (2 s + 1) * (grid + delta), delta = +-0.125. d = 1, s = 0, bit 15 clear.
    blocks, order = [], []
    for idx in chunks(list(range(2048)), 32):
        qs = bytes(k & 255 for k in idx)
        qh = b"".join(struct.pack("<H", sum(((k >> 8) & 7) << (3 * l) for l, k in enumerate(g)))
                      for g in chunks(idx, 4))
        blocks.append(f16(1.0) + qs + qh)
        order += idx
    y = [v - 0.125 for v in o.decode("iq1_s", blocks)]  # exact: |grid| is small
    return read_grid("iq1_s", y, order, 2048, 8, -128, 127, absolute=False)


def grid_via_iq1_m(o):
    # block: u8 qs[32] (index bits 0-7); u8 qh[16] (per group pair: bits 8-10 of each index,
    # then a delta sign bit); u8 scales[8] (four u16: 3-bit sub-scales, and the top nibble of
    # each u16 making up the float16 d). d = 1 (0x3c00), sub-scales 0, delta +0.125.
    blocks, order = [], []
    top = [(0x3c00 >> (4 * k)) & 15 for k in range(4)]
    sc = b"".join(struct.pack("<H", t << 12) for t in top)
    for idx in chunks(list(range(2048)), 32):
        qs = bytes(k & 255 for k in idx)
        qh = bytes(((p[0] >> 8) & 7) | (((p[1] >> 8) & 7) << 4) for p in chunks(idx, 2))
        blocks.append(qs + qh + sc)
        order += idx
    y = [v - 0.125 for v in o.decode("iq1_m", blocks)]
    return read_grid("iq1_m", y, order, 2048, 8, -128, 127, absolute=False)


def read_grid(name, y, order, n, width, lo, hi, absolute):
    """The grid from decoded floats y: group g of `width` elements is entry order[g]. With
    `absolute`, a type whose sign index 0 might not mean "all positive": the grid holds
    magnitudes (the sign table is derived separately)."""
    grid = [None] * n
    for g, k in enumerate(order):
        vals = y[g * width:(g + 1) * width]
        if absolute:
            vals = [abs(v) for v in vals]
        row = [as_int(name, "grid entry %d" % k, v, lo, hi) for v in vals]
        if grid[k] is not None and grid[k] != row:
            sys.exit("%s: grid entry %d decodes two ways" % (name, k))
        grid[k] = row
    return grid


def nonzero_entry(grid):
    for k, row in enumerate(grid):
        if all(row):
            return k
    sys.exit("no grid entry without a zero to read signs with")


def signs_of(y, width):
    """Sign bytes from groups of `width` decoded values: bit j set when element j is negative."""
    return [sum(1 << j for j in range(width) if g[j] < 0) for g in chunks(y, width)]


def ksigns_iq2_xxs(o, grid):
    # sign index s in slot l of a group of 32: bits 7l .. 7l+6 of the u32.
    k = nonzero_entry(grid)
    blocks = []
    for sidx in chunks(list(range(128)), 32):
        b = f16(8.0)
        for g in chunks(sidx, 4):
            b += bytes([k] * 4) + struct.pack("<I", sum(s << (7 * l) for l, s in enumerate(g)))
        blocks.append(b)
    return signs_of(o.decode("iq2_xxs", blocks), 8)


def ksigns_iq2_xs(o, grid):
    k = nonzero_entry(grid)
    blocks = [f16(8.0) + b"".join(struct.pack("<H", k | (s << 9)) for s in sidx) + bytes(8)
              for sidx in chunks(list(range(128)), 32)]
    return signs_of(o.decode("iq2_xs", blocks), 8)


def ksigns_iq3_xxs(o, grid):
    # two 4-element grid entries per sign index: bits 0-3 sign the first, 4-7 the second.
    k = nonzero_entry(grid)
    blocks = []
    for sidx in chunks(list(range(128)), 32):
        ss = b"".join(struct.pack("<I", sum(s << (7 * l) for l, s in enumerate(g)))
                      for g in chunks(sidx, 4))
        blocks.append(f16(4.0) + bytes([k] * 64) + ss)
    return signs_of(o.decode("iq3_xxs", blocks), 8)


def sign_bits_iq2_s(o, grid):
    """The stored sign bytes of iq2_s: byte value 1 << j must negate element j and only it."""
    k = nonzero_entry(grid)
    qs = bytes([k & 255] * 32)
    qh = bytes([sum(((k >> 8) & 3) << (2 * l) for l in range(4))] * 8)
    signs = bytes([1 << (i % 8) for i in range(32)])
    y = o.decode("iq2_s", [f16(8.0) + qs + signs + qh + bytes(8)])
    if signs_of(y, 8) != list(signs):
        sys.exit("iq2_s: a stored sign byte 1 << j does not negate exactly element j")


def sign_bits_iq3_s(o, grid):
    k = nonzero_entry(grid)
    qs = bytes([k & 255] * 64)
    qh = bytes([255 if k >> 8 else 0] * 8)
    signs = bytes([1 << (i % 8) for i in range(32)])
    y = o.decode("iq3_s", [f16(1.0) + qs + qh + signs + bytes(4)])
    if signs_of(y, 8) != list(signs):
        sys.exit("iq3_s: a stored sign byte 1 << j does not negate exactly element j")


# ---- the fixture of tests/unit/test_ggml_quants.c ----

def fnv1a64(data):
    h = 0xcbf29ce484222325
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def q8_0_to_float(o, blocks):
    """q8_1 has no to_float in ggml: its reference is q8_0's on the blocks without s."""
    tr = o.lib.ggml_get_type_traits(8).contents
    if tr.type_name.decode() != "q8_0" or tr.type_size != 34:
        sys.exit("%s: type 8 is not q8_0" % o.path)
    raw = b"".join(b[0:2] + b[4:36] for b in blocks)
    src = ctypes.create_string_buffer(raw, len(raw))
    out = (ctypes.c_float * (32 * len(blocks)))()
    TO_FLOAT(tr.to_float)(ctypes.cast(src, ctypes.c_void_p), out, 32 * len(blocks))
    return list(out)


class XorShift:
    """xorshift64, one byte per step: the same stream as the test's."""

    def __init__(self, seed):
        self.x = seed

    def byte(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.x = x
        return x & 255

    def block(self, name, bb, d=None):
        """bb bytes; the float16 scale set to d, or else to a random finite one below 2."""
        b = bytearray(self.byte() for _ in range(bb))
        if d is None:
            d = (self.byte() | (self.byte() << 8)) & 0xBFFF
        if name == "iq1_m":  # d is the top nibbles of the four u16 scale words
            for k in range(4):
                b[49 + 2 * k] = (b[49 + 2 * k] & 0x0F) | (((d >> (4 * k)) & 15) << 4)
        else:
            b[0:2] = struct.pack("<H", d)
        return bytes(b)


FIXTURE_SEED = 0x2545F4914F6CDD1D
BULK_BLOCKS = 4096


def fixture(o):
    """Per type (q8_1 and the grid i-quants): two blocks from one xorshift stream, the first
    with d = 0x3555 (0.3333), the second with d = 0xc7ff (-7.996), each with its bytes, the
    FNV-1a 64 hash of its float32 results (little-endian bits) and the bits of its first 8
    results; then, from a stream seeded with FIXTURE_SEED + the ggml type id, BULK_BLOCKS blocks
    with random finite scales (enough that every grid entry and sign index is used), and the
    hash of all their results."""
    names = ["q8_1"] + sorted(TYPES)
    rng = XorShift(FIXTURE_SEED)
    lines = ["/* Generated by `python3 quant/gen_iq_grids.py --fixture` from llama.cpp's"
             " to_float (q8_1:",
             " * q8_0's). */",
             "static const known_block g_known[] = {"]

    def decode(name, blocks):
        return q8_0_to_float(o, blocks) if name == "q8_1" else o.decode(name, blocks)

    def hash_of(y):
        return fnv1a64(struct.pack("<%df" % len(y), *y))

    for name in names:
        bb = 36 if name == "q8_1" else TYPES[name][1]
        for d in (0x3555, 0xc7ff):
            b = rng.block(name, bb, d)
            y = decode(name, [b])
            first = struct.unpack("<8I", struct.pack("<8f", *y[:8]))
            hexs = b.hex()
            lines.append('    {"%s", 0x%016xull,' % (name, hash_of(y)))
            lines.append("     {%s," % ", ".join("0x%08x" % v for v in first[:4]))
            lines.append("      %s}," % ", ".join("0x%08x" % v for v in first[4:]))
            for i in range(0, len(hexs), 88):
                lines.append('     "%s"%s' % (hexs[i:i + 88], "}," if i + 88 >= len(hexs) else ""))
    lines.append("};")
    lines.append("#define BULK_SEED   0x%016xull" % FIXTURE_SEED)
    lines.append("#define BULK_BLOCKS %d" % BULK_BLOCKS)
    lines.append("static const known_bulk g_bulk[] = {")
    for name in names:
        tid, bb = (9, 36) if name == "q8_1" else TYPES[name]
        r = XorShift(FIXTURE_SEED + tid)
        blocks = [r.block(name, bb) for _ in range(BULK_BLOCKS)]
        lines.append('    {"%s", 0x%016xull},' % (name, hash_of(decode(name, blocks))))
    lines.append("};")
    return "\n".join(lines) + "\n"


# ---- output ----

def c_table(decl, rows, indent="    ", width=100):
    """`decl = { {..}, {..}, ... };` with as many rows per line as fit in `width` columns."""
    items = ["{" + ", ".join(str(v) for v in r) + "}," for r in rows]
    lines, cur = [], indent
    for it in items:
        if cur != indent and len(cur) + 1 + len(it) > width:
            lines.append(cur)
            cur = indent
        cur += ("" if cur == indent else " ") + it
    lines.append(cur)
    return decl + " = {\n" + "\n".join(lines) + "\n};\n"


def c_bytes(decl, vals, per_line=16):
    lines = ["    " + " ".join("%d," % v for v in vals[i:i + per_line])
             for i in range(0, len(vals), per_line)]
    return decl + " = {\n" + "\n".join(lines) + "\n};\n"


def provenance(path):
    """The library's npm package and version when it sits in one, and its sha256."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    d = os.path.dirname(os.path.abspath(path))
    while d != os.path.dirname(d):
        pj = os.path.join(d, "package.json")
        if os.path.exists(pj):
            try:
                with open(pj) as f:
                    meta = json.load(f)
                return "%s of %s@%s,\n * sha256 %s." % (os.path.basename(path), meta["name"],
                                                        meta["version"], digest)
            except (OSError, ValueError, KeyError):
                break
        d = os.path.dirname(d)
    return "%s,\n * sha256 %s." % (os.path.basename(path), digest)


def generate(o):
    g2xxs = grid_iq2_xxs(o)
    g2xs = grid_iq2_xs(o)
    g2s = grid_iq2_s(o)
    g3xxs = grid_iq3_xxs(o)
    g3s = grid_iq3_s(o)
    g1s = grid_iq1_s(o)
    if grid_via_iq1_m(o) != g1s:
        sys.exit("iq1_m and iq1_s decode the shared grid differently")
    ks = ksigns_iq2_xxs(o, g2xxs)
    if ksigns_iq2_xs(o, g2xs) != ks or ksigns_iq3_xxs(o, g3xxs) != ks:
        sys.exit("iq2_xxs, iq2_xs and iq3_xxs decode the 7-bit sign indices differently")
    sign_bits_iq2_s(o, g2s)
    sign_bits_iq3_s(o, g3s)

    out = []
    out.append("""/*
 * iq_grids.c - the lookup tables of GGML's grid-based i-quants (declared in iq_grids.h).
 *
 * GENERATED by quant/gen_iq_grids.py; do not edit. The script loads llama.cpp's
 * libggml-base.so, decodes crafted blocks (scale 1, every grid index, every sign index) with
 * ggml's own to_float and reads the tables back out of the floats; tables two types share are
 * derived from both and checked to agree. To regenerate (llama.cpp's library from
 * scripts/install-oracle.sh, or --lib PATH):
 *     python3 quant/gen_iq_grids.py && clang-format --dry-run -Werror quant/iq_grids.c
 * and `python3 quant/gen_iq_grids.py --check` says whether this file still matches a library.
 * Generated from: %s
 */
#include "iq_grids.h"

/* clang-format off */
""" % provenance(o.path))
    out.append("\n/* iq2_xxs: 256 entries of 8 magnitudes */\n")
    out.append(c_table("const uint8_t td__gq_iq2xxs_grid[256][8]", g2xxs))
    out.append("\n/* iq2_xs: 512 entries of 8 magnitudes */\n")
    out.append(c_table("const uint8_t td__gq_iq2xs_grid[512][8]", g2xs))
    out.append("\n/* iq2_s: 1024 entries of 8 magnitudes */\n")
    out.append(c_table("const uint8_t td__gq_iq2s_grid[1024][8]", g2s))
    out.append("\n/* iq3_xxs: 256 entries of 4 magnitudes */\n")
    out.append(c_table("const uint8_t td__gq_iq3xxs_grid[256][4]", g3xxs))
    out.append("\n/* iq3_s: 512 entries of 4 magnitudes */\n")
    out.append(c_table("const uint8_t td__gq_iq3s_grid[512][4]", g3s))
    out.append("\n/* iq1_s and iq1_m: 2048 entries of 8 values in -1..1 */\n")
    out.append(c_table("const int8_t td__gq_iq1s_grid[2048][8]", g1s))
    out.append("\n/* iq2_xxs, iq2_xs, iq3_xxs: the sign byte of each 7-bit sign index (bit j set:"
               " element j\n * of the group of 8 is negated) */\n")
    out.append(c_bytes("const uint8_t td__gq_iq_ksigns[128]", ks))
    out.append("\n/* clang-format on */\n")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default=default_lib())
    ap.add_argument("--out", default=os.path.join(HERE, "iq_grids.c"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--fixture", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.lib):
        sys.exit("gen_iq_grids.py: %s: no such file (install it with scripts/install-oracle.sh "
                 "or pass --lib)" % a.lib)
    if a.fixture:
        sys.stdout.write(fixture(Oracle(a.lib)))
        return 0
    text = generate(Oracle(a.lib))
    if a.check:
        try:
            with open(a.out) as f:
                old = f.read()
        except OSError as e:
            sys.exit("gen_iq_grids.py: %s" % e)
        # the tables, not the provenance line: another build of the same tables matches
        mark = "/* clang-format off */"
        if old.partition(mark)[2] != text.partition(mark)[2]:
            print("%s: the tables differ from what %s gives" % (a.out, a.lib))
            return 1
        print("%s: the tables match %s" % (a.out, a.lib))
        return 0
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    print("wrote %s from %s" % (a.out, a.lib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
