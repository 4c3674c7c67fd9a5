"""3-D sliding-window inference: medseg ``predict_proba`` against MONAI ``sliding_window_inference``.

Run with the peer venv (it has monai):

    .venv-bench/bin/python -m bench.sliding_window_3d [--configs small,tiny,many] [--repeats 5]
        [--threads 1] [--json bench/_out/sliding_window_3d.json]

Both get the same network, volume, window, overlap (0.5), Gaussian blending (sigma = window / 8)
and window batch size. MONAI blends whatever its predictor returns, medseg blends probabilities,
so MONAI's predictor is ``softmax(net(x))``. Both run under ``torch.no_grad``. Matching details:
window starts are identical (every ``int(window * (1 - overlap))`` voxels, the last one flush
with the end), and medseg's Gaussian map uses MONAI's floor (products below 1e-3 raised to 1e-3
before scaling to peak 1; a blend does not depend on the scale). Volumes are larger than the
window, so neither pads (MONAI pads a smaller volume with zeros, centred; medseg mirror-pads at
the end: values differ there by design).

Values: max |medseg - MONAI| over the whole output, computed once per configuration in the driver.
Speed: wall time with each contender in its own worker process (``bench/common.py``),
interleaved repeats, median seconds per call; then process CPU time of both in the driver,
interleaved, median per call (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/sliding_window_3d.py` as well as `python -m ...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Worker, emit_result, interleave, log_stderr  # noqa: E402

# name: (net widths (in, hidden..., classes), volume edge, window edge, window batch)
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"widths": (1, 16, 16, 3), "volume": 96, "window": 64, "batch": 2},
    "tiny": {"widths": (1, 4, 3), "volume": 96, "window": 32, "batch": 4},
    "many": {"widths": (1, 4, 3), "volume": 64, "window": 16, "batch": 8},
    # a 1x1x1 convolution only: the time is the sliding window's own (gather, softmax, blend)
    "overhead": {"widths": (1, 3), "volume": 96, "window": 32, "batch": 4},
}
OVERLAP = 0.5


def build_net(widths: tuple[int, ...], seed: int = 0):
    """3x3x3 zero-padded convolutions with ReLU, then a 1x1x1 head: a small 3-D conv net."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Conv3d(a, b, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv3d(widths[-2], widths[-1], 1))
    return nn.Sequential(*layers).eval()


def make_call(tool: str, widths, volume: int, window: int, batch: int, threads: int = 1, seed: int = 0):
    """The contender's zero-argument call (runs in a worker process, or in the driver for values)."""
    import torch

    torch.set_num_threads(threads)
    net = build_net(tuple(widths), seed)
    x = torch.randn(1, widths[0], volume, volume, volume, generator=torch.Generator().manual_seed(seed + 1))
    roi = (window,) * 3
    if tool == "medseg":
        from medseg.inference import predict_proba

        def call():
            return predict_proba(net, x, window=roi, overlap=OVERLAP, blend="gaussian", batch_size=batch)

        return call
    if tool == "monai":
        from monai.inferers import sliding_window_inference

        def predictor(t):
            return torch.softmax(net(t), 1)

        def monai_call():
            with torch.no_grad():
                return sliding_window_inference(
                    x, roi, batch, predictor, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125
                )

        return monai_call
    raise ValueError(f"unknown tool {tool!r}")


def compare_values(cfg: dict[str, Any], threads: int) -> dict[str, float]:
    args = (cfg["widths"], cfg["volume"], cfg["window"], cfg["batch"], threads)
    a = make_call("medseg", *args)()
    b = make_call("monai", *args)()
    assert a.shape == b.shape, (a.shape, b.shape)
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "max_sum_error": float((a.sum(1) - 1).abs().max()),
    }


def cpu_times(cfg: dict[str, Any], threads: int, repeats: int) -> dict[str, list[float]]:
    """Process CPU seconds per call, both contenders in this process, interleaved (the order
    alternates each repeat). CPU time is the steadier number on a shared machine: time spent
    waiting for a core is not counted."""
    args = (cfg["widths"], cfg["volume"], cfg["window"], cfg["batch"], threads)
    calls = {tool: make_call(tool, *args) for tool in ("medseg", "monai")}
    for call in calls.values():
        call()  # warm-up
    out: dict[str, list[float]] = {tool: [] for tool in calls}
    for r in range(repeats):
        for tool in sorted(calls, reverse=bool(r % 2)):
            t0 = time.process_time()
            calls[tool]()
            out[tool].append(time.process_time() - t0)
    return out


def windows_per_volume(cfg: dict[str, Any]) -> int:
    n, w = cfg["volume"], cfg["window"]
    step = int(w * (1 - OVERLAP))
    return (len(range(0, n - w, step)) + 1) ** 3


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}",
        "",
        "| config | net (widths) | volume | window | windows | batch | max abs diff "
        "| medseg wall s | MONAI wall s | wall speed-up | medseg CPU s | MONAI CPU s | CPU speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['config']} | {'-'.join(map(str, r['widths']))} | {r['volume']}^3 | {r['window']}^3 | "
            f"{r['windows']} | {r['batch']} | {r['max_abs_diff']:.1e} | {r['medseg_s']:.3f} "
            f"({r['medseg_min']:.3f}-{r['medseg_max']:.3f}) | {r['monai_s']:.3f} "
            f"({r['monai_min']:.3f}-{r['monai_max']:.3f}) | {r['speedup']:.2f}x | {r['medseg_cpu_s']:.3f} | "
            f"{r['monai_cpu_s']:.3f} | {r['cpu_speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,tiny,many")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1, help="calls per timed sample")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        values = compare_values(cfg, args.threads)
        log_stderr(f"{name}: {values}")
        kw = {k: cfg[k] for k in ("widths", "volume", "window", "batch")} | {"threads": args.threads}
        workers = [Worker(tool, make_call, {"tool": tool, **kw}, warmup=1) for tool in ("medseg", "monai")]
        try:
            t = interleave(workers, args.repeats, args.steps, log_stderr)
        finally:
            for w in workers:
                w.stop()
        cpu = cpu_times(cfg, args.threads, args.repeats)
        med_cpu, mon_cpu = statistics.median(cpu["medseg"]), statistics.median(cpu["monai"])
        log_stderr(f"{name}: CPU s medseg {cpu['medseg']}, monai {cpu['monai']}")
        med, mon = t["medseg"], t["monai"]
        rows.append(
            {"config": name, **cfg, "windows": windows_per_volume(cfg), **values}
            | {"medseg_s": med.median, "medseg_min": min(med.seconds), "medseg_max": max(med.seconds)}
            | {"monai_s": mon.median, "monai_min": min(mon.seconds), "monai_max": max(mon.seconds)}
            | {
                "speedup": mon.median / med.median,
                "medseg_samples": med.seconds,
                "monai_samples": mon.seconds,
            }
            | {"medseg_cpu_s": med_cpu, "monai_cpu_s": mon_cpu, "cpu_speedup": mon_cpu / med_cpu}
            | {"medseg_cpu_samples": cpu["medseg"], "monai_cpu_samples": cpu["monai"]}
        )
    emit_result(args, rows, markdown)


if __name__ == "__main__":
    main()
