"""Does ``medseg predict`` stream? Resident memory of one predict run over 2,000 small images.

    nice -n 19 .venv/bin/python bench/predict_memory.py [--images 2000] [--size 128]

Writes ``--images`` synthetic RGB PNGs (``--size`` px square) into a temporary folder, trains a
tiny U-Net for a few steps on the built-in phantoms (only to have a real checkpoint), then runs
``python -m medseg.cli predict CKPT FOLDER --out OUT --no-overlays`` as a child process and
samples its resident set size (``VmRSS`` in ``/proc/PID/status``) every 0.1 s together with the
number of masks written so far. Prints a markdown table: RSS when 100, 500, 1000 and 2000 masks
were written, the peak (``VmHWM``), and the least-squares slope of RSS against the mask count
from 100 images on (MB per 1,000 images). Memory is what it measures, not time: run it niced.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHECKPOINTS = (100, 500, 1000, 2000)


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` RGB PNGs of smooth blobs on noise (content does not matter for memory)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.1, 0.25) * size
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        img = 0.6 * blob[..., None] + 0.4 * rng.random((size, size, 3), dtype=np.float32)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img_{i:05d}.png")


def tiny_checkpoint(out: Path, size: int) -> Path:
    """A few training steps of a small U-Net on the phantoms; returns its last checkpoint."""
    from medseg import load_config, train

    cfg = load_config(
        None,
        [
            f"output_dir={out}",
            "model.name=unet",
            "model.options.base_width=4",
            "train.epochs=1",
            "train.steps_per_epoch=2",
            "train.batch_size=2",
            "train.log_tensorboard=false",
            "data.synthetic.n=12",
            f"data.synthetic.size={size}",
            "eval.overlays=0",
        ],
    )
    os.environ.setdefault("MEDSEG_NO_PROGRESS", "1")
    result = train(cfg)
    return Path(result["checkpoint"])


def rss_kib(pid: int, key: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_predict(
    ckpt: Path, images: Path, out: Path, interval: float, log: Path | None
) -> tuple[list[tuple[int, int]], int]:
    """Run predict; returns samples (masks written, RSS KiB) and the peak RSS (KiB). Each
    sample is also appended to ``log`` (CSV: seconds, masks, RSS KiB) as it is taken."""
    cmd = [sys.executable, "-m", "medseg.cli", "predict", str(ckpt), str(images), "--out", str(out)]
    cmd += ["--no-overlays", "--device", "cpu"]
    env = dict(os.environ, MEDSEG_NO_PROGRESS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    masks = out / "masks"
    samples: list[tuple[int, int]] = []
    peak = 0
    start = time.perf_counter()
    sink = open(log, "w") if log else None  # noqa: SIM115 (kept open while sampling)
    while proc.poll() is None:
        rss = rss_kib(proc.pid)
        peak = max(peak, rss_kib(proc.pid, "VmHWM") or 0)
        if rss is not None:
            done = sum(1 for _ in os.scandir(masks)) if masks.is_dir() else 0
            samples.append((done, rss))
            if sink:
                sink.write(f"{time.perf_counter() - start:.1f},{done},{rss}\n")
                sink.flush()
        time.sleep(interval)
    if sink:
        sink.close()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{err}")
    return samples, peak


def at_count(samples: list[tuple[int, int]], count: int) -> float:
    """RSS (MB) of the first sample taken once ``count`` masks were written."""
    for done, rss in samples:
        if done >= count:
            return rss / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--log", type=Path, default=None, help="CSV of every sample (seconds, masks, RSS KiB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medseg-predict-mem-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_images(root / "data" / "images", args.images, args.size)
        ckpt = tiny_checkpoint(root / "run", args.size)
        print(
            f"prepared {args.images} images and a checkpoint in {time.perf_counter() - t0:.0f} s", flush=True
        )
        t0 = time.perf_counter()
        samples, peak = sample_predict(ckpt, root / "data" / "images", root / "pred", args.interval, args.log)
        wall = time.perf_counter() - t0
    steady = [(d, r / 1024) for d, r in samples if d >= 100]
    slope = (
        float(np.polyfit([d for d, _ in steady], [r for _, r in steady], 1)[0]) * 1000
        if steady
        else float("nan")
    )
    counts = [c for c in CHECKPOINTS if c <= args.images]
    print(f"\n{len(samples)} samples over {wall:.0f} s, {args.images} images of {args.size}x{args.size} px\n")
    print(
        "| "
        + " | ".join(f"RSS at {c} images (MB)" for c in counts)
        + " | peak RSS (MB) | slope (MB / 1000 images) |"
    )
    print("|" + "---|" * (len(counts) + 2))
    print(
        "| "
        + " | ".join(f"{at_count(samples, c):.1f}" for c in counts)
        + f" | {peak / 1024:.1f} | {slope:+.2f} |"
    )


if __name__ == "__main__":
    main()
