"""``medseg demo``: the main job end to end on built-in phantom data (no download)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from medseg.config import load_config
from medseg.data import write_synthetic_dataset
from medseg.engine.evaluator import evaluate_checkpoint
from medseg.engine.progress import console
from medseg.engine.trainer import train
from medseg.metrics.report import summary_table

DEMO_SETTINGS = {
    "binary": {"n": 160, "epochs": 8, "classes": 2},
    "multiclass": {"n": 160, "epochs": 14, "classes": 4},
}


def demo_config(out: Path, kind: str = "binary", epochs: int | None = None) -> dict:
    s = DEMO_SETTINGS[kind]
    return {
        "name": f"demo-{kind}",
        "output_dir": str(out),
        "model": {"name": "unet", "options": {"depth": 3, "base_width": 16, "norm": "batch"}},
        "loss": {"name": "dice_ce"},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4},
        "schedule": {"name": "poly", "warmup_epochs": 1},
        "train": {
            "epochs": epochs or s["epochs"],
            "batch_size": 8,
            "seed": 0,
            "val_every": 1,
            "log_tensorboard": True,
        },
        "data": {
            "root": str(out / "data"),
            "format": "folder",
            "size": [96, 96],
            "resize_policy": "resize",
            "split": {"val_fraction": 0.15, "test_fraction": 0.15, "seed": 0},
        },
        "augment": {"hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 0.3},
        "eval": {"overlays": 12},
    }


def run_demo(out: Path, *, epochs: int | None = None, kind: str = "binary") -> dict:
    out = Path(out)
    data_dir = out / "data"
    if not data_dir.is_dir():
        console.print(f"generating {DEMO_SETTINGS[kind]['n']} {kind} phantoms in {data_dir}")
        tmp = out / ".data.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        write_synthetic_dataset(tmp, kind=kind, n=DEMO_SETTINGS[kind]["n"], size=96, seed=0)
        tmp.rename(data_dir)  # complete or absent, never half-written
    cfg = load_config(demo_config(out, kind, epochs))
    resumable = _resumable(out)
    result = train(cfg, resume=resumable, overwrite=not resumable)  # the demo owns its folder (data/ inside)
    ev = evaluate_checkpoint(result["checkpoint"], split="test")
    dice = [r["dice"] for r in ev["records"] if not math.isnan(r["dice"])]
    console.print(summary_table(ev["summary"], metrics=["dice", "iou", "hd95", "assd", "nsd"]))
    console.print(
        f"\n[bold green]Demo finished.[/] Mean foreground Dice on {len(set(r['case'] for r in ev['records']))} "
        f"held-out phantoms: [bold]{np.mean(dice):.4f}[/]"
    )
    console.print(f"  report:     {ev['out_dir']}")
    console.print(f"  checkpoint: {result['checkpoint']}")
    console.print(f"  overlays:   {ev['paths']['overlays']}")
    console.print(f"  curves:     {out / 'curves.png'}   log: {out / 'log.csv'}")
    return {"dice": float(np.mean(dice)), "train": result, "eval": ev}


def _resumable(out: Path) -> bool:
    """A second `medseg demo` continues (or reuses) the first run instead of starting over."""
    return (out / "checkpoints" / "last.safetensors").is_file()
