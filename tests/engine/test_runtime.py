"""Process-level runtime settings: subnormal floats are flushed in every torch thread, or kept
when the user opts out. Each case runs in a fresh interpreter (the setting is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# 1e-30 * 1e-10 = 1e-40 is subnormal in fp32 (the smallest normal is about 1.18e-38). The
# product runs as an element-wise op over 2**20 values, split across two intra-op threads.
PROBE = """
import torch
from medseg.engine import runtime
torch.set_num_threads(2)
on = runtime.flush_denormals()
x = torch.full((1 << 20,), 1e-30, dtype=torch.float32)
y = x * 1e-10
print(int(on), int(torch.count_nonzero(y)), y.numel())
"""


def run_probe(**env: str) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    on, nonzero, total = (int(v) for v in out)
    return on, nonzero, total


def test_flush_denormals_zeroes_subnormal_results_in_every_thread():
    on, nonzero, total = run_probe()
    if not on:
        pytest.skip("this CPU cannot flush subnormal floats")
    assert total == 1 << 20
    assert nonzero == 0  # every chunk, whichever thread computed it


def test_opt_out_keeps_subnormal_results():
    on, nonzero, total = run_probe(MEDSEG_KEEP_DENORMALS="1")
    assert on == 0
    assert nonzero == total  # IEEE gradual underflow: 1e-40 is representable and kept
