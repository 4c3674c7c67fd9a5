"""Data-loading throughput of medseg's pipeline on the shared real datasets (one process, no workers).

MEDSEG_DATA=../shared/data .venv/bin/python bench/data_loading.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from medseg.data import AugmentConfig, DataConfig, build_data

ROOT = Path(os.environ.get("MEDSEG_DATA", "../shared/data"))
CASES = [
    ("ph2", {"size": (256, 256)}),
    ("drive", {"size": (96, 96), "resize_policy": "crop", "train_repeats": 4}),
    ("acdc", {"size": (224, 224)}),
    ("busi", {"size": (256, 256)}),
]


def main() -> None:
    aug = AugmentConfig(vflip=0.5, affine=0.5, elastic=0.3, gamma=0.3)
    for name, kw in CASES:
        t0 = time.perf_counter()
        data = build_data(DataConfig(root=ROOT / name, **kw), aug, seed=0)
        build = time.perf_counter() - t0
        times = []
        for epoch in range(2):
            data.train.set_epoch(epoch)
            t = time.perf_counter()
            for i in range(len(data.train)):
                data.train[i]
            times.append((time.perf_counter() - t) / len(data.train) * 1000)
        t = time.perf_counter()
        for _c in data.val:
            pass
        val_ms = (time.perf_counter() - t) / max(1, len(data.val)) * 1000
        print(f"| {name} | {len(data.train)} | {build:.1f} | {min(times):.1f} | {val_ms:.1f} |", flush=True)


if __name__ == "__main__":
    print("| dataset | train samples | build + validate (s) | train sample (ms) | val case (ms) |")
    print("|---|---|---|---|---|")
    main()
