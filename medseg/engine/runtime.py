"""Process-level runtime settings for the `medseg` command."""

from __future__ import annotations

import ctypes
import os
import sys

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def tune_glibc_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the OS.

    With default glibc settings every large tensor is an ``mmap``/``munmap`` pair and each
    step page-faults its activations in again; measured here (bench/unet.py, docs/benchmarks.md)
    this made medseg's U-Net 1.2x faster at inference and 1.6x faster in training. The cost is
    that the process keeps its peak memory resident. Set ``MEDSEG_NO_MALLOC_TUNING=1`` to opt out.
    """
    if sys.platform != "linux" or os.environ.get("MEDSEG_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(
        libc.mallopt(_M_MMAP_MAX, 0)
        and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        and libc.mallopt(_M_TOP_PAD, 1 << 28)
    )
