#!/usr/bin/python3
"""Files for tests/integration/test_align.c, written by numpy.

    align.py odd-npz DIR   DIR/odd.npz: np.savez of 28 members (7 dtypes x 4 name lengths), whose
                           name lengths move their data to offsets off their alignment; and
                           DIR/expect.txt: per member its name, item size, the byte offset of
                           its data in the file and the data's SHA-256
"""
import hashlib
import sys
import zipfile

import numpy as np


def odd_npz(out):
    rng = np.random.default_rng(7)
    arrs = {}
    for k, dt in enumerate(['<f4', '<f8', '<i2', '<c16', '<u8', '<f2', '<c8']):
        for n in range(1, 5):
            arrs['m' + 'x' * (n + k) + dt[1:]] = (rng.standard_normal(37 + n) * 100).astype(dt)
    np.savez(out + '/odd.npz', **arrs)
    raw = open(out + '/odd.npz', 'rb').read()
    with zipfile.ZipFile(out + '/odd.npz') as z, open(out + '/expect.txt', 'w') as f:
        for zi in z.infolist():
            name = zi.filename[:-4]
            a = arrs[name]
            lh = zi.header_offset
            nlen = int.from_bytes(raw[lh + 26:lh + 28], 'little')
            xlen = int.from_bytes(raw[lh + 28:lh + 30], 'little')
            member = lh + 30 + nlen + xlen
            off = member + raw[member:member + zi.file_size].index(b'\n') + 1
            assert raw[off:off + a.nbytes] == a.tobytes()
            f.write('%s %d %d %s\n' % (name, a.itemsize, off, hashlib.sha256(a.tobytes()).hexdigest()))


if __name__ == "__main__":
    cmds = {"odd-npz": odd_npz}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
