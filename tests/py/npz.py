#!/usr/bin/python3
"""The other side of tests/unit/test_npz.c: numpy's np.savez and np.load, and hostile archives.

    npz.py gen DIR               writes the archives test_npz reads into DIR, with expect.txt
                                 ("file key dtype shape sha256" per member, archive order; sha256
                                 of the little-endian C-order bytes) for numpy-written archives,
                                 and bad.txt ("file stage error message-part max_inflated") for
                                 hostile ones
    npz.py read PATH OUT         numpy loads the npz PATH: "key descr shape sha256" per member
                                 into OUT
    npz.py manifest MANIFEST OUT the npz entries of MANIFEST.json, into OUT (jansson refuses the
                                 whole manifest: two gguf values there exceed INT64_MAX)
    npz.py listing DIR OUT       expect.txt lines (absolute paths) for every *.npz in DIR
"""
import glob
import hashlib
import io
import json
import os
import struct
import sys
import zipfile
import zlib

import numpy as np

NAMES = {'b1': 'bool', 'u1': 'uint8', 'u2': 'uint16', 'u4': 'uint32', 'u8': 'uint64',
         'i1': 'int8', 'i2': 'int16', 'i4': 'int32', 'i8': 'int64', 'f2': 'float16',
         'f4': 'float32', 'f8': 'float64', 'c8': 'complex64', 'c16': 'complex128'}


def gen(out):
    rng = np.random.default_rng([20261128, 3])
    def le_bytes(a):
        return np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<')).tobytes()
    def line(fn, k, a):
        shape = ','.join(str(s) for s in a.shape) or '-'
        return '%s\t%s\t%s\t%s\t%s\n' % (fn, k, NAMES[a.dtype.str[1:]], shape,
                                         hashlib.sha256(le_bytes(a)).hexdigest())
    def cplx(shape, dt):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    d = {}
    d['f4'] = rng.standard_normal((3, 5)).astype('<f4')
    d['f8_be'] = rng.standard_normal((4, 3)).astype('>f8')
    d['i2_fortran'] = np.asfortranarray(np.arange(24, dtype='<i2').reshape(2, 3, 4))
    d['c8_be_fortran'] = np.asfortranarray(cplx((3, 4), '>c8'))
    d['c16'] = cplx((2, 2), '<c16')
    d['c16_be'] = cplx((3,), '>c16')
    d['bool'] = rng.random((2, 3)) > 0.5
    d['u1'] = rng.integers(0, 256, (7,), dtype='u1')
    d['u2_be'] = rng.integers(0, 2**16, (5,), dtype='<u2').astype('>u2')
    d['u4'] = rng.integers(0, 2**32, (2, 2), dtype='<u4')
    d['u8_be_fortran'] = np.asfortranarray(rng.integers(0, 2**63, (3, 2), dtype='<u8').astype('>u8'))
    d['i1'] = rng.integers(-128, 128, (9,), dtype='i1')
    d['i4_be'] = rng.integers(-2**31, 2**31, (4,), dtype='<i4').astype('>i4')
    d['i8'] = rng.integers(-2**63, 2**63, (2, 3), dtype='<i8')
    d['f2'] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, 65504], dtype='<f2')
    d['f2_be'] = np.array([1.5, -2.25], dtype='>f2')
    d['scalar'] = np.array(3.5)
    d['scalar_be'] = np.array(7, dtype='>i4')
    d['empty'] = np.zeros((0, 3), '<f4')
    d['empty_be_fortran'] = np.asfortranarray(np.zeros((3, 0), '>f8'))
    d['empty_1d'] = np.zeros(0, 'u1')
    d['layer/w'] = rng.standard_normal((2, 2)).astype('<f4')
    d['na\u00efve'] = np.arange(3, dtype='<i4')
    d['big'] = rng.standard_normal(70000).astype('<f4')
    class Stream:
        def __init__(s, f): s.f = f
        def write(s, b): return s.f.write(b)
        def flush(s): s.f.flush()
        def read(s, n=-1): raise io.UnsupportedOperation('not readable')
    exp = open(os.path.join(out, 'expect.txt'), 'w', encoding='utf-8')
    def save(fn, fun, stream=False, args=(), kw=None):
        kw = d if kw is None else kw
        with open(os.path.join(out, fn), 'wb') as f:
            fun(Stream(f) if stream else f, *args, **kw)
        # numpy writes the keyword arrays first, then arr_0, arr_1, ...
        keys = list(kw) + ['arr_%d' % i for i in range(len(args))]
        vals = list(kw.values()) + list(args)
        for k, a in zip(keys, vals):
            exp.write(line(fn, k, a))
        # numpy agrees with our expectations
        z = np.load(os.path.join(out, fn))
        assert list(z.keys()) == keys, (list(z.keys()), keys)
    save('np_savez.npz', np.savez)
    save('np_compressed.npz', np.savez_compressed)
    save('np_stream.npz', np.savez, stream=True)
    save('np_stream_compressed.npz', np.savez_compressed, stream=True)
    save('np_positional.npz', np.savez, args=(d['f4'], d['i8']), kw={'named': d['u1']})
    save('np_empty_archive.npz', np.savez, kw={})
    exp.close()
    # Streamed ones really use data descriptors, and numpy's use zip64 extras.
    for fn in ('np_stream.npz', 'np_stream_compressed.npz'):
        assert all(zi.flag_bits & 8 for zi in zipfile.ZipFile(os.path.join(out, fn)).infolist())
    raw = open(os.path.join(out, 'np_savez.npz'), 'rb').read()
    assert struct.unpack('<HH', raw[30 + 6:30 + 10])[0] == 1  # 'f4.npy' then the zip64 extra id

    # Hostile archives.
    def npy(a):
        b = io.BytesIO()
        np.lib.format.write_array(b, a, allow_pickle=True)
        return b.getvalue()
    def deflate(b):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(b) + c.flush()
    def build(ms):
        o = bytearray()
        cds = []
        for m in ms:
            name = m['name'].encode()
            data = m.get('data', b'')
            method = m.get('method', 0)
            comp = m.get('comp', data if method == 0 else deflate(data))
            crc = m.get('crc', zlib.crc32(data))
            usize = m.get('usize', len(data))
            flags = m.get('flags', 0)
            off = len(o)
            o += struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, flags, method, 0, 0x21, crc, len(comp),
                             usize, len(name), 0) + name + comp
            cds.append(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0x314, 20, flags, method, 0,
                                   0x21, crc, len(comp), usize, len(name), 0, 0, 0, 0, 0, off) + name)
        cd = len(o)
        for c in cds:
            o += c
        o += struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, len(ms), len(ms), len(o) - cd, cd, 0)
        return bytes(o)
    bad = open(os.path.join(out, 'bad.txt'), 'w')
    def badf(fn, b, stage, code, sub, bound=0):
        open(os.path.join(out, fn), 'wb').write(b)
        bad.write('%s\t%s\t%s\t%s\t%d\n' % (fn, stage, code, sub, bound))
    x = npy(np.arange(10, dtype='u1'))
    badf('bad_notnpy.npz', build([dict(name='a.npy', data=x), dict(name='readme.txt', data=b'hi')]),
         'load', 'TD_EFORMAT', 'not an .npy member')
    badf('bad_dotnpy.npz', build([dict(name='.npy', data=x)]), 'load', 'TD_EFORMAT', 'not an .npy member')
    badf('bad_dotdot.npz', build([dict(name='../a.npy', data=x)]), 'load', 'TD_EFORMAT', "'..'")
    badf('bad_abs.npz', build([dict(name='/a.npy', data=x)]), 'load', 'TD_EFORMAT', 'absolute')
    badf('bad_dup.npz', build([dict(name='a.npy', data=x), dict(name='a.npy', data=x, method=8)]),
         'load', 'TD_EDUP', 'appears twice')
    badf('bad_encrypted.npz', build([dict(name='a.npy', data=x, flags=1)]), 'load', 'TD_ENOTSUP', 'encrypted')
    zb = io.BytesIO()
    np.savez_compressed(zb, a=np.zeros(1000000, 'u1'), b=np.zeros(1000000, 'u1'), c=np.zeros(1000000, 'u1'))
    badf('bad_bound.npz', zb.getvalue(), 'load', 'TD_ELIMIT', 'max_inflated', 2500000)
    badf('ok_bound.npz', zb.getvalue(), 'ok', '-', '-', 3100000)
    z = deflate(npy(np.zeros(100000, 'u1')))
    badf('bad_ratio.npz', build([dict(name='a.npy', method=8, comp=z, usize=len(z) * 1033 + 2000)]),
         'load', 'TD_EFORMAT', '1032')
    hdr = npy(np.zeros(10, 'u1'))[:-10]  # the header alone
    full = hdr + bytes(range(60))
    badf('bad_more.npz', build([dict(name='a.npy', method=8, comp=deflate(full), data=full, usize=len(hdr) + 10)]),
         'load', 'TD_EFORMAT', 'more than the declared')
    short = hdr + bytes(5)
    badf('bad_less.npz', build([dict(name='a.npy', method=8, comp=deflate(short), data=short, usize=len(hdr) + 10)]),
         'load', 'TD_EFORMAT', 'inflates to')
    y = npy(rng.standard_normal(1000))
    badf('bad_crc.npz', build([dict(name='a.npy', data=y, method=8, crc=zlib.crc32(y) ^ 4)]),
         'load', 'TD_ECHECKSUM', 'CRC-32')
    badf('bad_crc_be.npz', build([dict(name='a.npy', data=npy(d['f8_be']), method=8, crc=1)]),
         'load', 'TD_ECHECKSUM', 'CRC-32')
    badf('bad_crc_fortran.npz', build([dict(name='a.npy', data=npy(d['i2_fortran']), method=8, crc=1)]),
         'load', 'TD_ECHECKSUM', 'CRC-32')
    badf('bad_crc_stored.npz', build([dict(name='a.npy', data=y, crc=zlib.crc32(y) ^ 4)]),
         'verify', 'TD_ECHECKSUM', 'CRC-32')
    badf('bad_magic.npz', build([dict(name='a.npy', data=b'hello world')]), 'load', 'TD_EFORMAT', 'bad magic')
    badf('bad_magic_deflated.npz', build([dict(name='a.npy', data=b'hello world', method=8)]), 'load', 'TD_EFORMAT', 'bad magic')
    badf('bad_trunc_member.npz', build([dict(name='a.npy', data=y[:200])]), 'load', 'TD_ETRUNC', 'need')
    badf('bad_trunc_member_deflated.npz', build([dict(name='a.npy', data=y[:200], method=8)]), 'load', 'TD_ETRUNC', 'need')
    badf('bad_trunc_header.npz', build([dict(name='a.npy', data=y[:70], method=8)]), 'load', 'TD_ETRUNC', 'truncated')
    badf('bad_trailing.npz', build([dict(name='a.npy', data=y + b'1234567')]), 'load', 'TD_EFORMAT', 'more than its npy header')
    badf('bad_object.npz', build([dict(name='a.npy', data=npy(np.array([1, 'x'], dtype=object)))]),
         'load', 'TD_EDTYPE', 'object')
    hh = b'\x93NUMPY\x02\x00' + struct.pack('<I', 1 << 30) + b'{' * 100
    badf('bad_hugeheader.npz', build([dict(name='a.npy', data=hh, method=8, usize=len(hh))]), 'load', 'TD_ELIMIT', 'exceeds')
    bad.close()


def read(path, out):
    assert zipfile.ZipFile(path).testzip() is None
    with np.load(path) as z, open(out, 'w', encoding='utf-8') as f:
        for k in z.files:
            a = z[k]
            assert a.flags.c_contiguous
            f.write('%s\t%s\t%s\t%s\n' % (k, a.dtype.str, ','.join(map(str, a.shape)) or '-',
                    hashlib.sha256(a.tobytes()).hexdigest()))


def manifest(manifest, out):
    m = json.load(open(manifest))
    f = {k: v for k, v in m['files'].items() if v['format'] == 'npz'}
    json.dump({'files': f}, open(out, 'w'))


def listing(src, out):
    with open(out, 'w') as f:
        for p in sorted(glob.glob(os.path.join(src, '*.npz'))):
            with np.load(p) as z:
                for k in z.files:
                    a = z[k]
                    b = np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<'))
                    f.write('%s\t%s\t%s\t%s\t%s\n' % (p, k, NAMES[a.dtype.str[1:]],
                            ','.join(map(str, a.shape)) or '-',
                            hashlib.sha256(b.tobytes()).hexdigest()))


if __name__ == "__main__":
    cmds = {"gen": gen, "read": read, "manifest": manifest, "listing": listing}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
