"""Process-level runtime settings for the `medseg` command (not applied when medseg is imported as a
library: they change the whole process)."""

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


def flush_denormals() -> bool:
    """Treat subnormal floats (below about 1.2e-38 in fp32) as zero on the CPU, in this thread
    and in the threads it starts later (they inherit the floating-point control register).

    Arithmetic on subnormal numbers takes a slow path on x86 CPUs; they arise in training (likely
    from a trained network's confident outputs). Measured here (bench/denormals.sh,
    docs/bench/speed.md), flushing them made fine-tuning epochs 1.02-1.13x faster with the same
    training loss to the last digit.
    Returns False where the CPU does not support it or ``MEDSEG_KEEP_DENORMALS=1`` opts out.
    Imports torch: call it only from commands that use it.
    """
    if os.environ.get("MEDSEG_KEEP_DENORMALS"):
        return False
    import torch  # deferred: the command's start-up stays cheap for commands without torch

    return bool(torch.set_flush_denormal(True))


def apply_command_settings(runs_networks: bool) -> None:
    """The process settings of a ``medseg`` command-line run: freed memory kept in the heap, and
    for the commands that run networks, subnormal floats flushed (before torch starts its worker
    threads, which inherit the setting). Also used by ``bench/`` to time a model as the command runs it."""
    tune_glibc_malloc()
    if runs_networks:
        flush_denormals()
