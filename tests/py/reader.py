#!/usr/bin/python3
"""Files for tests/unit/test_reader.c, beside the reference set.

    reader.py files STORED DEFLATED DESCRIPTORS ZIP64 VOCAB BIGARRAY
        np.savez and np.savez_compressed archives, one written through an unseekable stream (data
        descriptors), one with zip64 extras on stored members, a GGUF with a 200000-string
        vocabulary and one with a 4 MiB float32 array in its metadata
"""
import struct
import sys
import zipfile

import numpy as np


def files(stored, deflated, descriptors, zip64, vocab, bigarray):
    a = np.arange(3000, dtype='<f4')
    arrs = {'plain': a, 'big': a.astype('>i4'),
            'fortran': np.asfortranarray(a.reshape(50, 60)), 'empty': np.zeros(0),
            'scalar': np.float64(3.5)}
    np.savez(stored, **arrs)
    np.savez_compressed(deflated, **{'m%d' % i: a[:i * 7] for i in range(40)})
    class Unseekable:
        def __init__(self, f): self.f = f
        def write(self, b): return self.f.write(b)
        def flush(self): self.f.flush()
    with open(descriptors, 'wb') as f:
        with zipfile.ZipFile(Unseekable(f), 'w', zipfile.ZIP_DEFLATED) as z:
            for k, x in arrs.items():
                with z.open(k + '.npy', 'w') as m: np.lib.format.write_array(m, x)
    with zipfile.ZipFile(zip64, 'w', zipfile.ZIP_STORED) as z:
        for k, x in arrs.items():
            with z.open(k + '.npy', 'w', force_zip64=True) as m:
                np.lib.format.write_array(m, x)
    def s(b): return struct.pack('<Q', len(b)) + b
    def gguf(path, kv, nkv):
        ti = s(b'w') + struct.pack('<IQIQ', 1, 64, 0, 0)
        h = b'GGUF' + struct.pack('<IQQ', 3, 1, nkv) + kv + ti
        h += bytes(-len(h) % 32)
        open(path, 'wb').write(h + a[:64].tobytes())
    n = 200000
    kv = s(b'tokenizer.ggml.tokens') + struct.pack('<IIQ', 9, 8, n)
    kv += b''.join(s(b'token number %d' % i) for i in range(n))
    kv += s(b'general.name') + struct.pack('<I', 8) + s(b'vocab')
    gguf(vocab, kv, 2)
    kv = s(b'scores') + struct.pack('<IIQ', 9, 6, 1 << 20) + a.tobytes() * 350
    kv = kv[:8 + 6 + 16 + (4 << 20)]
    gguf(bigarray, kv, 1)


if __name__ == "__main__":
    cmds = {"files": files}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
