#!/usr/bin/python3
"""Files for tests/integration/test_daemon.c, written by numpy.

    daemon.py be-ramp PATH   a big-endian float32 npy of 100000 elements, element i = i / 2
"""
import sys

import numpy as np


def be_ramp(path):
    np.save(path, np.arange(100000, dtype='>f4') * 0.5)


if __name__ == "__main__":
    cmds = {"be-ramp": be_ramp}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
