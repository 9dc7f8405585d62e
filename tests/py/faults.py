#!/usr/bin/python3
"""Files for tests/integration/test_faults.c.

    faults.py big NPZ NPY GGUF   the slow-to-load files the truncation test cuts under the
                                 daemon: a 64 MiB deflated npz (level 1), the same 16 Mi float32
                                 values as a big-endian npy, and a GGUF whose 1.5 million
                                 vocabulary strings (27 MB) take a while to index
"""
import struct
import sys
import zipfile

import numpy as np


def big(npz, npy, gguf):
    a = (np.arange(16 << 20) % 65521).astype('<f4')
    with zipfile.ZipFile(npz, 'w', zipfile.ZIP_DEFLATED,
                         compresslevel=1) as z:
        with z.open('a.npy', 'w', force_zip64=True) as f:
            np.lib.format.write_array(f, a)
    np.save(npy, a.astype('>f4'))
    def s(b): return struct.pack('<Q', len(b)) + b
    n = 1500000
    kv = s(b'tokenizer.ggml.tokens') + struct.pack('<IIQ', 9, 8, n)
    kv += b''.join(s(b'tok%07d' % i) for i in range(n))
    ti = s(b'a') + struct.pack('<IQIQ', 1, 1024, 0, 0)
    h = b'GGUF' + struct.pack('<IQQ', 3, 1, 1) + kv + ti
    h += bytes(-len(h) % 32)
    open(gguf, 'wb').write(h + a[:1024].tobytes())


if __name__ == "__main__":
    cmds = {"big": big}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
