"""3-D patch training: can the data loader keep up with the training step?

Measures, in one run with interleaved repeats, (a) the data loader's throughput (patches/s) of
``configs/unet3d_acdc.yaml``'s pipeline (random patches with foreground oversampling, nnU-Net
3-D augmentation, per-volume z-score) over ACDC ``volumes_train`` with 0, 1 and 2 worker
processes, and (b) how many patches/s the training step of that config consumes (forward,
deep-supervision Dice-CE, backward, SGD step). Medians over repeats, min-max in brackets.

    MEDSEG_DATA=../shared/data .venv/bin/python bench/patch_loader_3d.py --repeats 3 --batches 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from medseg.config import load_config
from medseg.engine.device import resolve_device
from medseg.engine.distributed import Distributed
from medseg.engine.train_setup import build_loop, build_parts
from medseg.engine.train_step import train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "unet3d_acdc.yaml"


def loader_rate(parts, workers: int, batches: int, epoch: int) -> float:
    """Patches per second delivered by a fresh loader with ``workers`` processes (start-up excluded)."""
    data = parts.data.train
    data.set_epoch(epoch)
    bs = parts.cfg.train.batch_size
    loader = DataLoader(data, batch_size=bs, shuffle=False, num_workers=workers)
    it = iter(loader)
    next(it)  # workers started, first batch out
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * bs / (time.perf_counter() - t)


def step_rate(loop, batch, steps: int) -> float:
    """Patches per second the training step consumes (the same batch, ``steps`` times)."""
    train_step(loop.step, batch)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        train_step(loop.step, batch)
    return steps * batch["image"].shape[0] / (time.perf_counter() - t)


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=6, help="batches timed per loader repeat")
    ap.add_argument("--steps", type=int, default=3, help="training steps timed per repeat")
    ap.add_argument("--workers", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    out_dir = Path(tempfile.gettempdir()) / f"medseg-bench-patch-loader-{os.getpid()}"
    cfg = load_config(CONFIG, [f"output_dir={out_dir}"])
    parts = build_parts(cfg, Distributed(), resolve_device("cpu"))
    loop = build_loop(parts)
    batch = next(iter(DataLoader(parts.data.train, batch_size=cfg.train.batch_size, shuffle=False)))
    workers = [int(w) for w in args.workers.split(",")]
    rates: dict[str, list[float]] = {f"loader, {w} workers": [] for w in workers}
    rates["training step"] = []
    for r in range(args.repeats):
        order = list(workers) + ["step"]
        order = order[r % len(order) :] + order[: r % len(order)]  # rotate: load bursts hit all alike
        for what in order:
            if what == "step":
                key, rate = "training step", step_rate(loop, batch, args.steps)
            else:
                key, rate = f"loader, {what} workers", loader_rate(parts, int(what), args.batches, r)
            rates[key].append(rate)
            print(
                f"repeat {r + 1}: {key}: {rate:.2f} patches/s", flush=True
            )  # partial results survive a kill
    print(
        f"patch {list(cfg.data.patch_size)}, batch {cfg.train.batch_size}, model {cfg.model.name} "
        f"{cfg.model.options}, torch threads {torch.get_num_threads()}"
    )
    print("| what | patches/s (median [min-max]) |\n|---|---|")
    for k, xs in rates.items():
        print(f"| {k} | {summary(xs)} |")


if __name__ == "__main__":
    main()
