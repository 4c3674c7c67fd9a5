"""Is the built-in demo data learnable? Train a small U-Net for a fixed wall-clock budget on CPU
and report the validation Dice of the phantoms (binary and multi-class).

    .venv/bin/python bench/data_synthetic_learnability.py --seconds 120 --size 64 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medseg.data import AugmentConfig, DataConfig, build_data
from medseg.models.unet import UNet


def dice_scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> list[float]:
    out = []
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        denom = p.sum() + t.sum()
        out.append(1.0 if denom == 0 else 2.0 * (p & t).sum() / denom)
    return out


def run(kind: str, seconds: float, size: int, n: int, seed: int) -> dict:
    torch.manual_seed(seed)
    cfg = DataConfig(
        format="synthetic",
        size=(size, size),
        synthetic={"kind": kind, "n": n, "size": size},
        split={"val_fraction": 0.2},
    )
    data = build_data(cfg, AugmentConfig(), seed=seed)
    k_out = 1 if data.num_classes == 2 else data.num_classes
    model = UNet(data.in_channels, k_out, depth=3, base_width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0, epoch, steps = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds:
        data.train.set_epoch(epoch)
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        model.train()
        for b in DataLoader(data.train, batch_size=8, shuffle=True, generator=g, num_workers=0):
            logits = model(b["image"])
            if k_out == 1:
                t = b["mask"].float().unsqueeze(1)
                p = torch.sigmoid(logits)
                loss = (
                    F.binary_cross_entropy_with_logits(logits, t)
                    + 1
                    - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
                )
            else:
                loss = F.cross_entropy(logits, b["mask"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - t0 > seconds:
                break
        epoch += 1
    train_s = time.perf_counter() - t0
    model.eval()
    per_case = []
    with torch.no_grad():
        for c in data.val:
            logits = model(c["image"][None])
            pred = (logits[0, 0] > 0).long() if k_out == 1 else logits[0].argmax(0)
            per_case.append(dice_scores(pred.numpy(), c["mask"].numpy(), data.num_classes))
    d = np.array(per_case)
    return {
        "kind": kind,
        "train_s": round(train_s, 1),
        "epochs": epoch,
        "steps": steps,
        "val_cases": len(data.val),
        "dice_per_class": d.mean(0).round(3).tolist(),
        "dice_mean": round(float(d.mean()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default="binary,multiclass")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    for kind in a.kinds.split(","):
        print(run(kind, a.seconds, a.size, a.n, a.seed), flush=True)


if __name__ == "__main__":
    main()
