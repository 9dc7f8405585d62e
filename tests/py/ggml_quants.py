#!/usr/bin/python3
"""The other side of tests/unit/test_ggml_quants.c: numpy.

    ggml_quants.py mlx KIND RAW W S B   an independent transcription of MLX's extract_q4_0,
                                        extract_q4_1 and extract_q8_0_data: KIND is q4_0, q4_1 or
                                        q8_0, RAW the GGML blocks; exits 0 when W, S and B (the
                                        packed weights, scales and biases test_ggml_quants wrote)
                                        hold exactly what numpy computes
    ggml_quants.py f32-to-f16 IN OUT    numpy's float32 -> float16 rounding of IN, into OUT
    ggml_quants.py f16-to-f32 IN OUT    numpy's float16 -> float32 of IN, into OUT
"""
import sys

import numpy as np


def mlx(kind, raw, wf, sf, bf):
    data = np.fromfile(raw, dtype=np.uint8)
    bb = {'q4_0': 18, 'q4_1': 20, 'q8_0': 34}[kind]
    blocks = data.reshape(-1, bb)
    n = blocks.shape[0]
    scales = blocks[:, 0:2].copy().view(np.float16).reshape(n)
    np.seterr(all='ignore')
    if kind == 'q4_0':
        biases = (np.float16(-8) * scales).astype(np.float16)
    elif kind == 'q4_1':
        biases = blocks[:, 2:4].copy().view(np.float16).reshape(n)
    else:
        biases = (np.float16(-128) * scales).astype(np.float16)
    w = np.zeros((n, 16 if kind != 'q8_0' else 32), dtype=np.uint8)
    if kind == 'q8_0':
        w[:] = blocks[:, 2:] ^ 0x80
    else:
        qs = blocks[:, bb - 16:]
        for j in range(16):
            x = (qs[:, j] & 0x0F).astype(np.uint8)
            if j % 2: x = (x << 4).astype(np.uint8)
            w[:, j // 2] += x
        for j in range(16):
            x = (qs[:, j] >> 4).astype(np.uint8)
            if j % 2: x = (x << 4).astype(np.uint8)
            w[:, 8 + j // 2] += x
    ok = (np.fromfile(wf, dtype=np.uint8).tobytes() == w.tobytes() and
          np.fromfile(sf, dtype=np.uint16).tobytes() == scales.view(np.uint16).tobytes() and
          np.fromfile(bf, dtype=np.uint16).tobytes() == biases.view(np.uint16).tobytes())
    if not ok:
        sys.exit('%s: numpy transcription differs from the packed form' % kind)


def f32_to_f16(src, out):
    a = np.fromfile(src, dtype=np.float32)
    with np.errstate(all='ignore'):
        a.astype(np.float16).tofile(out)


def f16_to_f32(src, out):
    np.fromfile(src, dtype=np.float16).astype(np.float32).tofile(out)


if __name__ == "__main__":
    cmds = {"mlx": mlx, "f32-to-f16": f32_to_f16, "f16-to-f32": f16_to_f32}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
