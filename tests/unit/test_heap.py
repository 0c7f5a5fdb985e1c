"""The heap policy of long streamed runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys
import numpy as np
from bertgeom.heap import fixed_mmap_threshold

if sys.argv[1] == "fixed":
    assert fixed_mmap_threshold() and fixed_mmap_threshold()  # idempotent

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

big = np.ones(2 << 20)  # a 16 MiB mapped block, freed: glibc raises its mmap threshold
del big
keep, base = [], rss()
for i in range(24):  # temporaries of growing size interleaved with small kept results
    big = np.ones((1 << 16) * (4 + i))
    keep.append(np.ones(64))
    del big
print(rss() - base)
"""


def _growth(policy: str) -> float:
    run = subprocess.run(
        [sys.executable, "-c", CODE, policy], capture_output=True, text=True, check=True
    )
    return float(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_fixed_mmap_threshold_keeps_resident_memory_flat():
    """The pattern of a streamed run (large temporaries, small kept results) grows the resident
    size under glibc's dynamic threshold (13 MiB here) and not with the threshold fixed."""
    fixed, dynamic = _growth("fixed"), _growth("dynamic")
    assert fixed < 2.0, fixed
    assert dynamic > fixed + 4.0, (dynamic, fixed)
