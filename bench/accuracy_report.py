"""Finish the accuracy benchmarks of ``bench/accuracy.sh`` and print their docs tables.

    .venv/bin/python bench/accuracy_report.py costs  runs/accuracy   # idle machine: speed/FLOPs columns
    .venv/bin/python bench/accuracy_report.py tables runs/accuracy   # Markdown for docs/benchmarks.md
    .venv/bin/python bench/accuracy_report.py pairs  runs/acc_plan   # paired tests between the cells

``costs`` profiles every cell's model once more (``medseg.benchmark.runner.update_costs``:
parameters, GFLOPs, inference images/s and training peak memory, each model in a fresh
process) and rebuilds each benchmark's report. ``tables`` prints, per dataset, the
leaderboard that ``medseg benchmark`` wrote and, for multi-class data, Dice and HD95 per
class, read from the benchmark's ``leaderboard.csv`` (nothing is typed by hand). ``pairs`` prints,
per dataset, every cell's optimiser steps and, for every pair of cells, the two-sided paired
Wilcoxon test of per-case Dice (mean over the foreground classes; a test case is one pair).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe_ablation


def _datasets(root: Path) -> list[Path]:
    """Benchmark folders of ``root`` whose report exists (finished benchmarks)."""
    return sorted(p for p in root.iterdir() if (p / "leaderboard.csv").is_file())


def costs(root: Path) -> None:
    from medseg.benchmark.report import build_report
    from medseg.benchmark.runner import update_costs

    for d in _datasets(root):
        n = update_costs(d)
        build_report(d)
        print(f"{d.name}: {n} cells re-profiled, report rebuilt", flush=True)


def _f(row: dict[str, str], key: str, digits: int) -> str:
    v = row.get(key, "")
    try:
        x = float(v)
    except ValueError:
        return "-"
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def per_class_table(csv_path: Path) -> str | None:
    """Dice and HD95 per class (multi-class benchmarks only)."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    classes = [k.split("/", 1)[1] for k in rows[0] if k.startswith("dice/")]
    if len(classes) < 2:
        return None
    head = (
        ["model", "loss"]
        + [f"Dice {c}" for c in classes]
        + ["Dice mean"]
        + [f"HD95 {c}" for c in classes]
        + ["HD95 mean"]
    )
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        cells = [r["model"], r["loss"]] + [_f(r, f"dice/{c}", 4) for c in classes] + [_f(r, "dice", 4)]
        cells += [_f(r, f"hd95/{c}", 2) for c in classes] + [_f(r, "hd95", 2)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def tables(root: Path) -> None:
    for d in _datasets(root):
        plan = json.loads((d / "benchmark.json").read_text())["plan"]
        print(f"### {d.name}\n")
        print(f"epochs {plan.get('epochs')}, seed {plan.get('seed')}, overrides {plan.get('overrides')}\n")
        print((d / "leaderboard.md").read_text().strip() + "\n")
        extra = per_class_table(d / "leaderboard.csv")
        if extra:
            print("Per class (HD95 in pixels of the original slices):\n")
            print(extra + "\n")


def pairs(root: Path) -> None:
    from recipe_ablation import case_scores  # per case: mean over the foreground classes
    from scipy.stats import wilcoxon

    for d in _datasets(root):
        saved = {
            p.name: json.loads((p / "cell.json").read_text())
            for p in sorted((d / "cells").iterdir())
            if (p / "cell.json").is_file()
        }
        dice = {n: {k: v["dice"] for k, v in case_scores(c["records"]).items()} for n, c in saved.items()}
        steps = {n: int(c["history"][-1]["step"]) if c["history"] else 0 for n, c in saved.items()}
        print(f"### {d.name}\n")
        print("steps: " + ", ".join(f"{n} {s}" for n, s in steps.items()) + "\n")
        print("| first | second | cases | first better | mean Dice difference | Wilcoxon p |")
        print("|---|---|---:|---:|---:|---:|")
        names = list(dice)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                cases = sorted(set(dice[a]) & set(dice[b]))
                diff = [dice[a][k] - dice[b][k] for k in cases]
                better = sum(x > 0 for x in diff)
                p = wilcoxon(diff).pvalue if any(diff) else 1.0
                mean = sum(diff) / len(diff)
                print(f"| {a} | {b} | {len(cases)} | {better} | {mean:+.4f} | {p:.2g} |")
        print()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["costs", "tables", "pairs"])
    p.add_argument("root", type=Path, nargs="?", default=Path("runs/accuracy"))
    a = p.parse_args(argv)
    {"costs": costs, "tables": tables, "pairs": pairs}[a.what](a.root)


if __name__ == "__main__":
    main()
