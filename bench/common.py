"""Shared timing helpers for the ``bench/`` scripts (run in ``.venv-bench``, never imported by medseg).

How a comparison is measured, so that peers are compared fairly on a shared, noisy CPU:

* each contender runs in its OWN worker process (``Worker``), built once, warmed up, then idle;
  so its peak RSS (``ru_maxrss``) is its own and allocator state never leaks between contenders;
* only one worker runs at a time; the driver ``interleave`` visits every worker once per repeat, in
  an order rotated each repeat, so a burst of load from other jobs hits all contenders alike;
* a repeat is ``steps`` back-to-back steps; its time per step is one sample; the report gives the
  median over repeats (and min/max), and ratios are ratios of medians.

glibc malloc note (measured on this machine): PyTorch's CPU allocator calls malloc/free for every
activation; glibc serves blocks above the dynamic mmap threshold with fresh ``mmap`` + ``munmap``,
so every step page-faults its activations in again (zero-filled by the kernel). In peer models'
inference this took 24-47 % of CPU time (lead's profile); in docs/bench/unet.md it cut page faults
from ~10^5 to ~0 per step and sped MONAI's BasicUNet up 1.3-1.4x. ``TUNED_MALLOC_ENV`` keeps freed memory in the heap
(no mmap, no trim); it costs no accuracy and only keeps the process's peak RSS resident.
Set it in the shell (``export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) or per worker here:
it must be in the environment before the process starts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# glibc reads these once, at the first malloc of a new process.
TUNED_MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0",  # never serve a block with mmap: reuse heap pages
    "MALLOC_TRIM_THRESHOLD_": "17179869184",  # 16 GiB: never give the heap top back to the kernel
    "MALLOC_TOP_PAD_": "268435456",  # grow the heap 256 MiB at a time
}
MALLOC_ENVS: dict[str, dict[str, str]] = {"default": {}, "tuned": TUNED_MALLOC_ENV}


def rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine_summary() -> str:
    """One line naming the CPU, core count, torch and thread count."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------


def _worker_main(conn, factory: Callable[..., Callable[[], Any]], kwargs: dict, warmup: int) -> None:
    """Child process: build the contender once, warm it up, then time steps on request."""
    import sys

    sys.stdout = sys.stderr  # a contender's own prints must not end up in the result on stdout
    try:
        base_rss = rss_mb()
        step = factory(**kwargs)
        built_rss = rss_mb()
        for _ in range(warmup):
            step()
        # a factory may attach ``step.info`` (e.g. the first call's time: compilation)
        ready = {"base_rss_mb": base_rss, "built_rss_mb": built_rss, **getattr(step, "info", {})}
        conn.send(("ready", ready))
        parent = os.getppid()
        while True:
            while not conn.poll(5.0):
                if os.getppid() != parent:  # driver died: don't linger holding memory
                    return
            cmd, arg = conn.recv()
            if cmd == "time":
                f0 = minor_faults()
                t0 = time.perf_counter()
                for _ in range(arg):
                    step()
                dt = time.perf_counter() - t0
                conn.send(("ok", {"seconds": dt / arg, "minflt": (minor_faults() - f0) / arg}))
            elif cmd == "stats":
                conn.send(("ok", {"peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb()}))
            elif cmd == "stop":
                conn.send(("ok", None))
                return
    except (EOFError, BrokenPipeError):  # driver gone
        return
    except BaseException as e:  # report, don't hang the driver
        import traceback

        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except OSError:
            pass


class Worker:
    """A contender in its own process. ``factory(**kwargs)`` runs in the child and returns a
    zero-argument ``step`` callable; ``env`` is added to the child's environment (e.g. malloc
    tuning, thread counts), which must be set before the child process starts."""

    def __init__(
        self,
        name: str,
        factory: Callable[..., Callable[[], Any]],
        kwargs: dict | None = None,
        env: dict[str, str] | None = None,
        warmup: int = 2,
    ) -> None:
        self.name = name
        self._args = (factory, kwargs or {}, warmup)
        self._env = env or {}
        self._proc: Any = None
        self.info: dict[str, float] = {}

    def start(self) -> None:
        """Spawn the child (fresh interpreter, so ``env`` reaches glibc) and wait until it is built
        and warmed up."""
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        saved = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)
        try:
            self._proc = ctx.Process(target=_worker_main, args=(child, *self._args), daemon=True)
            self._proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.info = self._reply()

    def _reply(self) -> Any:
        status, payload = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"worker {self.name!r} failed: {payload}")
        return payload

    def time(self, steps: int) -> dict[str, float]:
        self._conn.send(("time", steps))
        return self._reply()

    def stats(self) -> dict[str, float]:
        self._conn.send(("stats", None))
        return self._reply()

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
                self._reply()
            except (OSError, EOFError, RuntimeError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.terminate()


@dataclass
class Timing:
    """Per-step seconds of one contender, one sample per repeat."""

    name: str
    seconds: list[float] = field(default_factory=list)
    minflt: list[float] = field(default_factory=list)
    peak_rss_mb: float = float("nan")
    base_rss_mb: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def per_second(self, items_per_step: int) -> float:
        """Throughput (e.g. images/s) from the median step time."""
        return items_per_step / self.median

    def fields(self, items_per_step: int) -> dict[str, Any]:
        """The result-row fields every speed script reports for a contender."""
        return {
            "img_per_s": self.per_second(items_per_step),
            "s_per_step_median": self.median,
            "s_per_step_min": min(self.seconds),
            "s_per_step_max": max(self.seconds),
            "peak_rss_mb": self.peak_rss_mb,
            "base_rss_mb": self.base_rss_mb,
            "samples": self.seconds,
        }


def emit_result(args: Any, rows: list[dict[str, Any]], markdown: Callable[[dict], str]) -> dict[str, Any]:
    """``{"args", "machine", "rows"}``: printed as ``markdown(result)`` and saved to ``args.json``
    when given; returned."""
    import json
    from pathlib import Path

    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_summary(),
        "rows": rows,
    }
    print(markdown(result))
    if getattr(args, "json", None):
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


def interleave(
    workers: Sequence[Worker], repeats: int, steps: int, log: Callable[[str], None] | None = None
) -> dict[str, Timing]:
    """Time every worker ``repeats`` times, ``steps`` steps each, visiting all workers once per
    repeat in an order rotated by one each repeat. Workers are started (built + warmed up) one
    after another before timing begins, so building never overlaps a measurement."""
    for w in workers:
        w.start()
        if log:
            log(f"ready {w.name}: RSS {w.info['built_rss_mb']:.0f} MiB after build")
    out = {w.name: Timing(w.name, base_rss_mb=w.info.get("base_rss_mb", float("nan"))) for w in workers}
    n = len(workers)
    for r in range(repeats):
        order = [workers[(i + r) % n] for i in range(n)]
        for w in order:
            res = w.time(steps)
            out[w.name].seconds.append(res["seconds"])
            out[w.name].minflt.append(res["minflt"])
            if log:
                log(
                    f"repeat {r + 1}/{repeats} {w.name:<40s} {res['seconds']:.3f} s/step "
                    f"{res['minflt']:.0f} minor faults/step"
                )
    for w in workers:
        out[w.name].peak_rss_mb = w.stats()["peak_rss_mb"]
    return out


def profile_table(step: Callable[[], Any], steps: int = 1, row_limit: int = 15) -> str:
    """torch.profiler table (CPU ops sorted by self time) over ``steps`` calls of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
