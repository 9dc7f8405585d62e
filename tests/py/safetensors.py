#!/usr/bin/python3
"""The other side of tests/unit/test_safetensors.c: a reader written from the specification.

    safetensors.py check PATH JSON   reads the safetensors file PATH and compares it with JSON
                                     ({"meta": {...} or null, "names": [...], "dtypes": [...],
                                     "shapes": [...]}): the header frame and its padding to 8,
                                     the order, every tensor's dtype, shape, alignment and bytes
                                     (tensor i's byte j is (31 i + 7 j + (j >> 8)) & 255), no gap
                                     or overlap in the data
"""
import json
import struct
import sys


def check(path, want_json):
    buf = open(path, 'rb').read()
    want = json.loads(want_json)
    n = struct.unpack('<Q', buf[:8])[0]
    assert (8 + n) % 8 == 0, 'header not padded to 8'
    hdr = buf[8:8 + n].decode('utf-8')
    assert hdr.startswith('{') and hdr.rstrip(' ').endswith('}'), 'header frame'
    pairs = json.loads(hdr, object_pairs_hook=lambda kv: kv)
    meta = dict(pairs[0][1]) if pairs and pairs[0][0] == '__metadata__' else None
    tensors = [(k, dict(v)) for k, v in pairs if k != '__metadata__']
    assert meta == want['meta'], (meta, want['meta'])
    assert [k for k, _ in tensors] == want['names'], 'order'
    size = {'BOOL':1,'U8':1,'I8':1,'F8_E4M3':1,'F8_E5M2':1,'U16':2,'I16':2,'F16':2,'BF16':2,
            'U32':4,'I32':4,'F32':4,'U64':8,'I64':8,'F64':8,'C64':8}
    data = buf[8 + n:]
    spans = []
    for i, (k, v) in enumerate(tensors):
        assert sorted(v) == ['data_offsets', 'dtype', 'shape'], v
        b, e = v['data_offsets']
        cnt = 1
        for d in v['shape']: cnt *= d
        assert e - b == cnt * size[v['dtype']], k
        assert (8 + n + b) % size[v['dtype']] == 0, 'alignment of ' + k
        assert v['dtype'] == want['dtypes'][i] and v['shape'] == want['shapes'][i], k
        exp = bytes((i * 31 + j * 7 + (j >> 8)) & 255 for j in range(e - b))
        assert data[b:e] == exp, 'bytes of ' + k
        spans.append((b, e))
    pos = 0
    for b, e in sorted(spans):
        assert b == pos, 'gap or overlap'
        pos = e
    assert pos == len(data), 'data not covered'


if __name__ == "__main__":
    cmds = {"check": check}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
