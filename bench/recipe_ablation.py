"""Which parts of the plan's recipe pay for themselves at equal CPU time? (leave-one-out, seeds)

The default of ``medseg train --data DATA --budget B`` is ``medseg plan``'s recipe (U-Net with
instance norm + leaky ReLU, strided downsampling to a 4-8 px bottleneck, widths 32 -> 512, AdamW
1e-3 with poly decay to zero at the budget's end, batch 2, Dice + CE with batch Dice and, since
stop 24's ACDC runs, deep supervision and medseg's light augmentation (2-D; nnU-Net's before),
per-image z-score, the best validation checkpoint and its post-processing). Each
variant changes ONE factor of that recipe to the alternative a user might reach for (or nnU-Net
uses), and every run gets the same wall-clock budget on one CPU core: a factor that costs time
(a larger batch, deep supervision) pays for it in fewer steps, which is the question a user with a
budget has.

Per dataset: ``medseg plan DATA --budget B`` once; then for every variant and seed
``train(plan + overrides, train.seed=SEED)`` and ``evaluate_checkpoint(best, split="test")`` (the
run's post-processing applied, as ``medseg evaluate`` does). The seeds of a variant run at the same
time, one process per core with one thread each, so every run shares the machine with exactly one
other run of the same kind. The baseline's last checkpoint is scored too (best vs final) when its
weights differ from the best one's.

Statistics: per test case the foreground-mean Dice and HD95 of each run, averaged over the seeds (a
case is one sample however many seeds scored it), then a two-sided Wilcoxon signed-rank test per
case against the baseline (scipy).

usage (from the repository root, medseg importable):
  python bench/recipe_ablation.py --work runs/recipe_ablation --budget 3 --seeds 0,1 \\
      --dataset ph2=PH2_FOLDER --dataset drive=../shared/data/drive --dataset acdc=ACDC_FOLDER \\
      [--variants baseline,sgd,...]
Finished runs are kept in WORK/results/*.json and skipped on a re-run; the tables are written to
WORK/recipe_ablation.md and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "nnunet"))
from score import paired as wilcoxon_pairs  # noqa: E402  (the nnU-Net comparison's paired test)

SGD = "optim={name: sgd, lr: 0.01, momentum: 0.99, nesterov: true, weight_decay: 3.0e-5}"
# name -> (what changes, overrides on top of the plan); "depth-1" is resolved from the plan
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the plan as written", []),
    "sgd_nesterov": ("SGD, Nesterov 0.99, lr 1e-2, wd 3e-5 (nnU-Net) instead of AdamW 1e-3", [SGD]),
    "batch8": ("batch 8 instead of 2 (fewer steps in the budget)", ["train.batch_size=8"]),
    "batchnorm_relu": (
        "BatchNorm + ReLU instead of InstanceNorm + LeakyReLU",
        ["model.options.norm=batch", "model.options.act=relu"],
    ),
    # deep_supervision and aug_light: measured against the plan before both became its default
    # (docs/bench/recipe.md); on today's plan they change nothing, no_deep_supervision and aug_nnunet do
    "deep_supervision": (
        "auxiliary outputs at every decoder scale (weights halving per level)",
        ["model.options.deep_supervision=true", "loss.name=deep_supervision", "loss.options={base: dice_ce}"],
    ),
    "aug_nnunet": ("nnU-Net's augmentation instead of medseg's light one", ["augment.preset=nnunet"]),
    "no_deep_supervision": (
        "no auxiliary outputs: Dice + CE on the full-resolution output only",
        ["model.options.deep_supervision=false", "loss.name=dice_ce", "loss.options={}"],
    ),
    "aug_light": (
        "medseg's light augmentation (flip, small affine, brightness/contrast, gamma) instead of nnU-Net's",
        ["augment.preset=custom"],
    ),
    "per_image_dice": ("Dice per image instead of over the batch", ["loss.options={per_image: true}"]),
    "shallower": ("one resolution stage fewer (bottleneck twice as large)", ["depth-1"]),
    # the accuracy tables (docs/bench/accuracy.md) found a 3-M-parameter DeepLab v3+ ahead of the
    # plan's 20.6-M U-Net on ACDC at 15 min (5.7x the steps): does a cheaper network learn more?
    # since stop 29 the plan's 2-D widths are the narrow ones (baseline == narrow): `wide` is the
    # plan before, and `--variants wide,baseline` repeats the width comparison
    "narrow": (
        "half nnU-Net's widths (16 -> 256): about a quarter of the FLOPs per step",
        ["model.options.base_width=16", "model.options.max_width=256"],
    ),
    "wide": (
        "nnU-Net's widths (32 -> 512), the plan's before stop 29: about 4x the FLOPs per step",
        ["model.options.base_width=32", "model.options.max_width=512"],
    ),
    "deeplabv3plus": (
        "DeepLab v3+ on ResNet-18 x0.5 instead of the U-Net (no decoder scales: Dice + CE)",
        [
            "model={name: deeplabv3plus, options: {backbone: resnet18, width_mult: 0.5}}",
            "loss.name=dice_ce",
            "loss.options={}",
        ],
    ),
    "preset": ("the dataset's hand-written preset (--preset NAME=CONFIG) instead of the plan", []),
}


def plan_dataset(name: str, root: Path, work: Path, budget: float) -> Path:
    out = work / name / "plan.yaml"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "medseg.cli", "plan", str(root), "--out", str(out)]
        subprocess.run([*cmd, "--budget", f"{budget:g}m"], check=True, cwd=REPO)
    return out


def overrides_for(variant: str, plan: Path, seed: int, out: Path) -> list[str]:
    cfg = yaml.safe_load(plan.read_text())
    extra = []
    if variant == "preset":  # the plan's data folder, split (the same test cases) and budget
        root, minutes = cfg["data"]["root"], cfg["train"]["budget_minutes"]
        split = json.dumps(cfg["data"].get("split") or {})
        extra = [
            f"data.root={json.dumps(str(root))}",
            f"data.split={split}",
            f"train.budget_minutes={minutes}",
        ]
    for item in VARIANTS[variant][1]:
        if item == "depth-1":
            item = f"model.options.depth={int(cfg['model']['options']['depth']) - 1}"
        extra.append(item)
    common = [f"train.seed={seed}", "train.log_tensorboard=false", "eval.overlays=0", f"output_dir={out}"]
    return common + extra


def case_scores(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per case: mean over the foreground classes of Dice and of HD95 (nan when any class lacks one)."""
    by_case: dict[str, list[dict]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    out = {}
    for case, rows in by_case.items():
        hd = [float(r["hd95"]) for r in rows]
        out[case] = {
            "dice": float(np.mean([float(r["dice"]) for r in rows])),
            "hd95": float(np.mean(hd)) if all(math.isfinite(h) for h in hd) else float("nan"),
        }
    return out


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold the same model tensors (the best one is often the final one)."""
    import torch

    from medseg.models.weights_file import read_checkpoint

    wa, wb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    model = [k for k in wa if k.startswith("model.")]
    return set(model) == {k for k in wb if k.startswith("model.")} and all(
        torch.equal(wa[k], wb[k]) for k in model
    )


def run_one(plan: Path, variant: str, seed: int, out: Path, threads: int, preset: Path | None = None) -> dict:
    """Train one variant/seed for the plan's budget and score its checkpoint(s) on the test split
    (``preset``: the config the ``preset`` variant trains instead of the plan)."""
    import torch

    torch.set_num_threads(threads)
    from medseg.config import load_config
    from medseg.engine.evaluator import evaluate_checkpoint
    from medseg.engine.trainer import train

    if (variant == "preset") != (preset is not None):
        raise SystemExit("the preset variant needs --preset NAME=CONFIG for its dataset (and only it)")
    cfg = load_config(preset or plan, overrides_for(variant, plan, seed, out))
    t0 = time.monotonic()
    cpu0 = time.process_time()
    result = train(cfg, overwrite=True)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    history = result["history"]
    best, last = Path(result["checkpoint"]), Path(result["last_checkpoint"])
    ev = evaluate_checkpoint(best, split="test", out_dir=out / "eval_best", device="cpu")
    scores = {"best": case_scores(ev["records"])}
    if variant == "baseline":  # best vs final checkpoint, scored only when they differ
        if same_weights(best, last):
            scores["last"] = scores["best"]
        else:
            ev = evaluate_checkpoint(last, split="test", out_dir=out / "eval_last", device="cpu")
            scores["last"] = case_scores(ev["records"])
    return {
        "variant": variant,
        "seed": seed,
        "overrides": VARIANTS[variant][1],
        "config": str(preset or plan),
        "steps": int(history[-1]["step"]) if history else 0,
        "batch_size": cfg.train.batch_size,
        "train_wall_seconds": round(wall, 1),
        "train_cpu_seconds": round(cpu, 1),
        "threads": threads,
        "cases": scores["best"],
        "cases_last": scores.get("last"),
    }


def launch(args: argparse.Namespace, dataset: str, plan: Path, variant: str, seeds: list[int]) -> None:
    """Run the seeds of one variant side by side (one process each, ``--threads`` threads)."""
    procs = []
    for seed in seeds:
        path = args.work / "results" / f"{dataset}_{variant}_s{seed}.json"
        if path.is_file():
            continue
        out = args.work / dataset / f"{variant}_s{seed}"
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MEDSEG_NO_PROGRESS="1")
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, __file__, "--one", str(plan), variant, str(seed), str(out), str(path)]
        cmd += ["--threads", str(args.threads)]
        if variant == "preset":  # main() checked that every dataset has one
            cmd += ["--preset", f"{dataset}={args.presets[dataset]}"]
        log = open(args.work / "logs" / f"{dataset}_{variant}_s{seed}.log", "w")  # noqa: SIM115
        procs.append(
            (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log, path)
        )
    for proc, log, path in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            print(f"  FAILED ({rc}): {path.name}; see {log.name}", flush=True)


def load_results(work: Path, dataset: str, variant: str) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((work / "results").glob(f"{dataset}_{variant}_s*.json"))
    ]


def seed_mean(runs: list[dict], key: str, field: str = "cases") -> dict[str, float]:
    """Per case, the mean over the runs (seeds) of one score."""
    cases = sorted(set.intersection(*[set(r[field]) for r in runs]))
    return {c: float(np.mean([r[field][c][key] for r in runs])) for c in cases}


def paired(a: dict[str, float], b: dict[str, float], higher_is_better: bool) -> str:
    """The paired test of a vs b on the cases both scored with a finite value, as a table cell."""
    common = [c for c in a if c in b and math.isfinite(a[c]) and math.isfinite(b[c])]
    if len(common) < 2:
        return f"- ({len(common)} cases)"
    res = wilcoxon_pairs([a[c] for c in common], [b[c] for c in common], higher_is_better)
    if res["ties"] == res["n"]:
        return f"identical ({res['n']} cases)"
    return f"{res['a_better']}/{res['n']}, p={res['p_value']:.2g}"


def row(
    label: str, runs: list[dict], base: list[dict] | None, field: str = "cases", base_field: str = "cases"
) -> str:
    dice, hd = seed_mean(runs, "dice", field), seed_mean(runs, "hd95", field)
    per_seed = " / ".join(f"{np.mean([v['dice'] for v in r[field].values()]):.3f}" for r in runs)
    hd_finite = [v for v in hd.values() if math.isfinite(v)]
    steps = " / ".join(str(r["steps"]) for r in runs)
    cmp_d = cmp_h = "-"
    if base is not None:
        cmp_d = paired(dice, seed_mean(base, "dice", base_field), True)
        cmp_h = paired(hd, seed_mean(base, "hd95", base_field), False)
    return (
        f"| {label} | {runs[0]['batch_size']} x {steps} | {np.mean(list(dice.values())):.3f} | {per_seed} "
        f"| {np.median(hd_finite) if hd_finite else float('nan'):.1f} | {cmp_d} | {cmp_h} |"
    )


def table(work: Path, dataset: str, variants: list[str]) -> str:
    base = load_results(work, dataset, "baseline")
    lines = [
        f"**{dataset}**",
        "",
        "| variant | batch x steps (per seed) | mean Dice | per seed | HD95 median | Dice vs baseline: better, p "
        "| HD95 vs baseline: better, p |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for v in variants:
        runs = load_results(work, dataset, v)
        if runs:
            lines.append(row(v, runs, None if v == "baseline" else base))
    if base and all(r.get("cases_last") for r in base):
        lines.append(row("baseline, final checkpoint", base, base, field="cases_last"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--one", nargs=5, metavar=("PLAN", "VARIANT", "SEED", "OUT", "RESULT"), help=argparse.SUPPRESS
    )
    ap.add_argument("--work", type=Path, help="scratch folder (plans, runs, results)")
    ap.add_argument(
        "--dataset", action="append", default=[], metavar="NAME=FOLDER", help="a dataset (repeatable)"
    )
    ap.add_argument(
        "--budget", type=float, default=3.0, help="minutes of training per run (and the plan's budget)"
    )
    ap.add_argument("--seeds", default="0,1", help="training seeds, run side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME=CONFIG",
        help="the config the 'preset' variant trains for dataset NAME (its data options and recipe; "
        "the data folder and budget are the plan's)",
    )
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, in run order")
    ap.add_argument("--report", action="store_true", help="only print the tables of finished runs")
    args = ap.parse_args(argv)
    if args.one:
        plan, variant, seed, out, result = args.one
        preset = [Path(item.split("=", 1)[1]) for item in args.preset]
        res = run_one(Path(plan), variant, int(seed), Path(out), args.threads, preset[0] if preset else None)
        Path(result).write_text(json.dumps(res, indent=1))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.work is None or not args.dataset:
        print(
            f"need --work, --dataset; known variants: {', '.join(VARIANTS)} (unknown: {unknown})",
            file=sys.stderr,
        )
        return 2
    datasets = dict(item.split("=", 1) for item in args.dataset)
    args.presets = dict(item.split("=", 1) for item in args.preset)
    if "preset" in variants and set(datasets) - set(args.presets):
        missing = ", ".join(sorted(set(datasets) - set(args.presets)))
        print(f"the preset variant needs --preset NAME=CONFIG for: {missing}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    for sub in ("results", "logs"):
        (args.work / sub).mkdir(parents=True, exist_ok=True)
    if not args.report:
        for name, root in datasets.items():
            plan = plan_dataset(name, Path(root), args.work, args.budget)
            for v in variants:
                print(f"== {name} {v} seeds {seeds} ({time.strftime('%H:%M:%S')})", flush=True)
                launch(args, name, plan, v, seeds)
    text = "\n\n".join(table(args.work, name, variants) for name in datasets)
    (args.work / "recipe_ablation.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
