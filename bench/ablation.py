"""Which parts of nnU-Net's recipe make medseg's U-Net learn more per image seen? (PH2, CPU)

Each variant is the baseline preset ``configs/unet_ph2.yaml`` with ONE factor of nnU-Net's 2-D
recipe switched on (and one run with all of them), trained for the SAME number of epochs of
``--images-per-epoch`` images, so every run sees about the same number of images (batch x steps
fixed; batch 3 takes 8/3 as many steps). Wall-clock time is not the measure (the machine is shared); the training time per step
is recorded on the side. Every run is scored on the same seeded test split with medseg's
metrics (per-case Dice and HD95 in pixels of the downsampled images), and compared per case
with the baseline by a paired Wilcoxon signed-rank test.

PH2 is first downsampled by ``--factor`` (area for images, nearest for masks) into ``--work``,
so HD95 is in pixels of the downsampled images, as in the nnU-Net comparison of the issue.

usage (from the repository root, medseg importable):
  python bench/ablation.py --data ../shared/data/ph2 --work runs/ablation [--epochs 9]
      [--size 160 224] [--variants baseline,all,...] [--seed 0]
Finished variants are kept in WORK/results/*.json and skipped on a re-run; the table is
written to WORK/ablation.md and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SGD = "optim={name: sgd, lr: 0.01, momentum: 0.99, nesterov: true, weight_decay: 3.0e-5}"
PLAIN = ["model.options.downsample=strided", "model.options.max_width=512", "model.options.init=he"]
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "sgd_nesterov": [SGD, "schedule.warmup_epochs=0"],
    "batch3": ["train.batch_size=3"],
    "instnorm_leaky": ["model.options.norm=instance", "model.options.act=leaky_relu"],
    "plain_arch": PLAIN,  # depth from depth_for_size is added in overrides_for()
    "deep_supervision": [
        "model.options.deep_supervision=true",
        "loss.name=deep_supervision",
        "loss.options={base: dice_ce}",
    ],
    "aug_nnunet": ["augment.preset=nnunet"],
}
VARIANTS["all"] = [o for name in VARIANTS if name != "baseline" for o in VARIANTS[name]]
# everything but the optimiser: the baseline's AdamW (lr 1e-3, 1 warm-up epoch) with the rest
VARIANTS["all_adamw"] = [
    o for name in VARIANTS if name not in ("baseline", "sgd_nesterov", "all") for o in VARIANTS[name]
]


def prepare(src: Path, dst: Path, factor: int) -> Path:
    """PH2 downsampled by ``factor`` (images: box filter, masks: nearest) into ``dst``."""
    from PIL import Image

    if (dst / "done").is_file():
        return dst
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((src / "images").glob("*.png")):
        image = Image.open(path).convert("RGB")
        mask = Image.open(src / "masks" / path.name).convert("L")
        size = (image.width // factor, image.height // factor)
        image.resize(size, Image.BOX).save(dst / "images" / path.name)
        mask.resize(size, Image.NEAREST).save(dst / "masks" / path.name)
    (dst / "done").write_text("ok\n")
    return dst


def overrides_for(name: str, args: argparse.Namespace, data_root: Path, out: Path) -> list[str]:
    from medseg.models.unet import depth_for_size

    h, w = args.size
    batch = 3 if "train.batch_size=3" in VARIANTS[name] else 8
    common = [
        f"data.root={data_root}",
        f"data.size=[{h},{w}]",
        f"data.split={{val_fraction: 0.1, test_fraction: 0.3, seed: {args.seed}}}",
        f"train.epochs={args.epochs}",
        f"train.steps_per_epoch={round(args.images_per_epoch / batch)}",
        f"train.val_every={args.epochs}",
        "train.early_stopping=null",
        f"train.seed={args.seed}",
        "train.log_tensorboard=false",
        "eval.overlays=0",
        f"output_dir={out}",
    ]
    extra = list(VARIANTS[name])
    if "model.options.downsample=strided" in extra:
        extra.append(f"model.options.depth={depth_for_size((h, w))}")
    return common + extra


def run_variant(name: str, args: argparse.Namespace, data_root: Path) -> dict:
    from medseg.config import load_config
    from medseg.engine.evaluator import evaluate_checkpoint
    from medseg.engine.trainer import train

    out = args.work / "runs" / name
    overrides = overrides_for(name, args, data_root, out)
    cfg = load_config(args.config, overrides)
    t0 = time.monotonic()
    result = train(cfg, overwrite=True)  # a re-run of a variant replaces it
    train_seconds = time.monotonic() - t0
    history = result["history"]
    steps = int(history[-1]["step"])
    step_seconds = sum(float(h["epoch_seconds"]) for h in history) / max(steps, 1)
    ev = evaluate_checkpoint(result["last_checkpoint"], split="test", out_dir=out / "eval", device="cpu")
    cases = {r["case"]: {"dice": r["dice"], "hd95": r["hd95"]} for r in ev["records"]}
    return {
        "variant": name,
        "overrides": VARIANTS[name],
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "images_seen": steps * cfg.train.batch_size,
        "seconds_per_step": step_seconds,
        "train_wall_seconds": train_seconds,
        "final_train_loss": float(history[-1]["train_loss"]),
        "cases": cases,
    }


def _paired_p(a: dict, b: dict, key: str) -> tuple[float, int, int]:
    """Wilcoxon p of a vs b on the cases both scored (finite values); wins of a."""
    from scipy.stats import wilcoxon

    common = [c for c in a if c in b and math.isfinite(a[c][key]) and math.isfinite(b[c][key])]
    x = np.array([a[c][key] for c in common])
    y = np.array([b[c][key] for c in common])
    if len(common) < 2 or np.allclose(x, y):
        return float("nan"), 0, len(common)
    better = (x > y) if key == "dice" else (x < y)
    return float(wilcoxon(x, y).pvalue), int(better.sum()), len(common)


def table(results: dict[str, dict]) -> str:
    base = results.get("baseline")
    rows = [
        "| variant | batch x steps | images | s/step | mean Dice | median Dice | HD95 median (px) "
        "| Dice vs baseline: better, p | HD95 vs baseline: better, p |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        dice = [v["dice"] for v in r["cases"].values()]
        hd = [v["hd95"] for v in r["cases"].values() if math.isfinite(v["hd95"])]
        cmp_d = cmp_h = "-"
        if base is not None and name != "baseline":
            p, wins, n = _paired_p(r["cases"], base["cases"], "dice")
            cmp_d = f"{wins}/{n}, p={p:.2g}"
            p, wins, n = _paired_p(r["cases"], base["cases"], "hd95")
            cmp_h = f"{wins}/{n}, p={p:.2g}"
        rows.append(
            f"| {name} | {r['batch_size']} x {r['steps']} | {r['images_seen']} | {r['seconds_per_step']:.1f} "
            f"| {np.nanmean(dice):.3f} | {np.nanmedian(dice):.3f} | "
            f"{statistics.median(hd) if hd else float('nan'):.1f} | {cmp_d} | {cmp_h} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="PH2 folder (images/, masks/)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (data copy, runs, results)")
    ap.add_argument("--config", type=Path, default=Path("configs/unet_ph2.yaml"), help="baseline preset")
    ap.add_argument("--factor", type=int, default=3, help="PH2 downsampling factor")
    ap.add_argument("--size", type=int, nargs=2, default=(160, 224), help="training size H W")
    ap.add_argument("--epochs", type=int, default=9, help="epochs of every run")
    ap.add_argument(
        "--images-per-epoch",
        type=int,
        default=32,
        help="images per epoch (steps per epoch = this / batch size): epochs x this = images seen",
    )
    ap.add_argument("--seed", type=int, default=0, help="split and training seed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset, in run order")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSEG_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    data_root = prepare(args.data, args.work / f"ph2_x{args.factor}", args.factor)
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = results_dir / f"{args.seed}_{name}.json"
        if path.is_file():
            continue
        print(f"== {name}: {' '.join(VARIANTS[name]) or '(baseline)'}", flush=True)
        path.write_text(json.dumps(run_variant(name, args, data_root), indent=1))
    results = {}
    for name in VARIANTS:
        path = results_dir / f"{args.seed}_{name}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    text = table(results)
    (args.work / "ablation.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
