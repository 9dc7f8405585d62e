#!/usr/bin/python3
"""The other side of tests/unit/test_npy.c: numpy's np.save and np.load.

    npy.py write DIR   numpy writes every variant into DIR: NAME.npy, with NAME.raw (its data as
                       little-endian C-order bytes) and NAME.shape (the shape, space-separated)
    npy.py check DIR   numpy reads the files test_npy wrote into DIR (NAME.npy beside NAME.raw)
                       and compares dtype, shape, bytes and the 64-byte header alignment
"""
import sys

import numpy as np
from numpy.lib import format as F


def write(d):
    rng = np.random.default_rng(7)
    cases = {}
    for code in ['b1','u1','u2','u4','u8','i1','i2','i4','i8','f2','f4','f8','c8','c16']:
        for order in '<>':
            dt = np.dtype(order + code)
            raw = rng.integers(0, 256, size=7*5*dt.itemsize, dtype=np.uint8)
            a = raw.view(dt.newbyteorder('<')).reshape(7, 5).astype(dt)
            if code == 'b1': a = (raw[:35] & 1).astype(bool).reshape(7, 5)
            cases[f'{code}_{"le" if order == "<" else "be"}'] = a
            cases[f'{code}_{"le" if order == "<" else "be"}_fortran'] = np.asfortranarray(a)
    cases['f4_3d_fortran'] = np.asfortranarray(np.arange(2*3*4, dtype='>f4').reshape(2,3,4))
    cases['f8_0d'] = np.array(3.25)
    cases['i4_empty'] = np.zeros((0, 3), dtype='<i4')
    cases['i4_empty2'] = np.zeros((4, 0), dtype='>i4')
    cases['u1_1d'] = np.arange(200, dtype=np.uint8)
    cases['v2'] = np.frombuffer(bytes(range(24)), dtype='V2').reshape(3, 4)
    for name, a in cases.items():
        np.save(f'{d}/{name}.npy', a)
        le = a if a.dtype.kind == 'V' else a.astype(a.dtype.newbyteorder('<'))
        open(f'{d}/{name}.raw', 'wb').write(np.ascontiguousarray(le).tobytes())
        open(f'{d}/{name}.shape', 'w').write(' '.join(map(str, a.shape)))
    a = np.arange(12, dtype='<f4').reshape(3, 4)
    for v in [(1,0),(2,0),(3,0)]:
        with open(f'{d}/ver{v[0]}.npy', 'wb') as f:
            F.write_array(f, a, version=v)
        open(f'{d}/ver{v[0]}.raw', 'wb').write(a.tobytes())
        open(f'{d}/ver{v[0]}.shape', 'w').write('3 4')


def check(d):
    expect = {'bool':'|b1','uint8':'|u1','uint16':'<u2','uint32':'<u4','uint64':'<u8',
      'int8':'|i1','int16':'<i2','int32':'<i4','int64':'<i8','float16':'<f2',
      'float32':'<f4','float64':'<f8','complex64':'<c8','complex128':'<c16',
      'bfloat16':'|V2','float8_e4m3':'|u1','float8_e5m2':'|u1'}
    n = 0
    for name, descr in expect.items():
        for shape in ['2x3', '0d', 'empty', '1d']:
            a = np.load(f'{d}/{name}_{shape}.npy')
            raw = open(f'{d}/{name}_{shape}.raw', 'rb').read()
            assert a.dtype.str == descr, (name, a.dtype.str, descr)
            want = {'2x3': (2, 3), '0d': (), 'empty': (0, 5), '1d': (7,)}[shape]
            assert a.shape == want, (name, shape, a.shape)
            assert a.tobytes() == raw, (name, shape)
            with open(f'{d}/{name}_{shape}.npy', 'rb') as f:
                major, minor = np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                assert f.tell() % 64 == 0, (name, f.tell())
            n += 1
    print('numpy verified', n)


if __name__ == "__main__":
    cmds = {"write": write, "check": check}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
