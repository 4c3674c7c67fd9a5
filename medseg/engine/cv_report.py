"""The cross-validation report: per-fold and pooled out-of-fold scores (``medseg cv-report RUN``).

Reads ``RUN/fold_k/oof/per_case.json`` of every fold (:mod:`medseg.engine.cross_val`) and writes
``RUN/cv/``: ``cv_report.json``, ``cv_report.md`` and ``cv_box.png`` (per-case Dice and HD95 of
each fold, one box per fold and class). Two views of the same predictions:

- **over folds**: each fold's mean per class, then their mean ± sample sd over the folds
  (how much the score moves with the training cases);
- **pooled**: every case once (each was validated by exactly one fold), mean ± sd over cases;
  this is the number to compare, and the per-case values are what a paired test should use.

HD95 is undefined when exactly one of prediction and reference is empty (the default empty-case
policy); such cases are left out of the means and counted (``n_nan``). When the run has a
``postprocessing.json``, the report records the plan and the OOF mean Dice before and after it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write, atomic_write_text
from medseg.data.splits_io import SPLITS_FILE, read_splits
from medseg.errors import DataError
from medseg.metrics import report as rep
from medseg.metrics.records import class_order, metric_label, read_records, to_json
from medseg.postprocess import PLAN_FILE, PostprocessPlan

METRICS = ("dice", "hd95")
FOLD = re.compile(r"fold_(\d+)")


def _fold_count(run: Path) -> int | None:
    """K of the run's saved fold table (``RUN/splits.json``), when it has one."""
    try:
        return int(read_splits(run / SPLITS_FILE)["folds"])
    except (DataError, TypeError, ValueError):
        return None


def fold_dirs(run: str | Path) -> list[Path]:
    """``RUN/fold_k`` folders that hold out-of-fold predictions, in fold order (only folds
    ``0..K-1`` of the run's saved fold table, when it has one: a stale ``fold_7`` is not a fold)."""
    run = Path(run)
    k = _fold_count(run)
    found = []
    for d in run.iterdir() if run.is_dir() else []:
        m = FOLD.fullmatch(d.name)
        if m and (d / "oof" / "per_case.json").is_file() and (k is None or int(m.group(1)) < k):
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def _fold_records(run: Path) -> dict[int, list[dict]]:
    folds = fold_dirs(run)
    if not folds:
        raise DataError(f"{run}: no fold_k/oof/per_case.json (train with --fold first)")
    out: dict[int, list[dict]] = {}
    seen: dict[str, int] = {}
    for d in folds:
        k = int(d.name.split("_")[1])
        recs = read_records(d / "oof" / "per_case.json")
        for case in {str(r["case"]) for r in recs}:
            if case in seen:
                raise DataError(
                    f"{d}: case {case!r} was also validated by fold {seen[case]}; folds must not overlap"
                )
            seen[case] = k
        out[k] = [{**r, "fold": k} for r in recs]
    return out


def _mean(values: list[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return float(np.mean(ok)) if ok else float("nan")


def _postprocessing(run: Path) -> dict[str, Any] | None:
    if not (run / PLAN_FILE).is_file():
        return None
    plan = PostprocessPlan.load(run / PLAN_FILE)
    before = plan.decision[0]["mean_before"] if plan.decision else float("nan")
    kept = [d for d in plan.decision if d["kept"]]
    after = kept[-1]["mean_after"] if kept else before
    return {
        "plan": plan.describe(),
        "oof_mean_dice_before": before,
        "oof_mean_dice_after": after,
        "decision": plan.decision,
    }


def summarize_cv(by_fold: dict[int, list[dict]]) -> dict[str, Any]:
    """Per-fold means, mean ± sd over folds and pooled statistics, per class and metric."""
    pooled_records = [r for recs in by_fold.values() for r in recs]
    classes = class_order(pooled_records)
    pooled = rep.summarize(pooled_records, metrics=list(METRICS))
    per_fold: dict[int, dict[str, Any]] = {}
    for k, recs in by_fold.items():
        per_fold[k] = {
            "n_cases": len({r["case"] for r in recs}),
            **{
                c: {m: _mean([float(r[m]) for r in recs if r["class"] == c]) for m in METRICS}
                for c in classes
            },
        }
    over_folds: dict[str, dict[str, dict[str, float]]] = {}
    for c in classes:
        over_folds[c] = {}
        for m in METRICS:
            v = np.asarray([per_fold[k][c][m] for k in per_fold])
            v = v[np.isfinite(v)]
            over_folds[c][m] = {
                "mean": float(v.mean()) if v.size else float("nan"),
                "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "n_folds": int(v.size),
            }
    pooled_cls = {c: {m: pooled["per_class"][c]["metrics"][m] for m in METRICS} for c in classes}
    return {
        "classes": classes,
        "folds": sorted(by_fold),
        "n_cases": pooled["n_cases"],
        "per_fold": per_fold,
        "over_folds": over_folds,
        "pooled": pooled_cls,
    }


def _fmt(m: str, x: float) -> str:
    return "n/a" if not math.isfinite(x) else (f"{x:.4f}" if m == "dice" else f"{x:.2f}")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The report as rows (header first): one per fold, then mean ± sd over folds, then pooled."""
    classes = report["classes"]
    header = ["", "cases"] + [f"{c} {metric_label(m)}" for c in classes for m in METRICS]
    rows = [header]
    for k in report["folds"]:
        f = report["per_fold"][k]
        rows.append([f"fold {k}", str(f["n_cases"])] + [_fmt(m, f[c][m]) for c in classes for m in METRICS])
    o = report["over_folds"]
    rows.append(
        ["mean ± sd over folds", ""]
        + [f"{_fmt(m, o[c][m]['mean'])} ± {_fmt(m, o[c][m]['sd'])}" for c in classes for m in METRICS]
    )
    p = report["pooled"]
    rows.append(
        ["pooled (every case once)", str(report["n_cases"])]
        + [
            f"{_fmt(m, p[c][m]['mean'])} ± {_fmt(m, p[c][m]['std'])}"
            + (f" [{p[c][m]['n_nan']} n/a]" if p[c][m]["n_nan"] else "")
            for c in classes
            for m in METRICS
        ]
    )
    return rows


def report_table(report: dict[str, Any]):
    """The rows of :func:`table_rows` as a rich Table (the CLI prints it)."""
    from rich.table import Table  # deferred: rich

    rows = table_rows(report)
    table = Table(title=f"cross-validation: {report['run']}")
    for i, h in enumerate(rows[0]):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows[1:]:
        table.add_row(*r)
    return table


def _markdown(report: dict[str, Any]) -> str:
    rows = table_rows(report)
    lines = [
        f"# Cross-validation report: {report['run']}",
        "",
        f"{len(report['folds'])} folds, {report['n_cases']} out-of-fold cases (each validated by one fold). "
        "Dice: higher is better; HD95 (pixels or mm): lower is better; n/a = undefined (one mask empty).",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    pp = report.get("postprocessing")
    if pp:
        lines += [
            "",
            f"Post-processing (decided on the OOF predictions): **{pp['plan']}**; OOF mean Dice "
            f"{pp['oof_mean_dice_before']:.4f} -> {pp['oof_mean_dice_after']:.4f}.",
        ]
    return "\n".join(lines) + "\n"


def box_plot_by_fold(by_fold: dict[int, list[dict]], path: Path) -> None:
    """One panel per class and metric: a box per fold of the per-case values."""
    from matplotlib.figure import Figure  # deferred: matplotlib costs ~0.8 s

    classes = class_order([r for recs in by_fold.values() for r in recs])
    panels = [(c, m) for c in classes for m in METRICS]
    fig = Figure(figsize=(4.5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (c, m) in zip(axes, panels):
        data: list[Any] = []
        for k in sorted(by_fold):
            v = np.asarray([float(r[m]) for r in by_fold[k] if r["class"] == c])
            data.append(v[np.isfinite(v)] if np.isfinite(v).any() else [np.nan])
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(np.arange(1, len(by_fold) + 1), [f"fold {k}" for k in sorted(by_fold)])
        ax.set_title(f"{c}: {metric_label(m)} per case")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


def cv_report(run: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Build and write the report of the cross-validation in ``run`` (default out: ``RUN/cv``)."""
    run = Path(run)
    by_fold = _fold_records(run)
    report = {"run": str(run), **summarize_cv(by_fold), "postprocessing": _postprocessing(run)}
    out = Path(out_dir) if out_dir is not None else run / "cv"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cv_report.json", to_json(report))
    atomic_write_text(out / "cv_report.md", _markdown(report))
    atomic_write(out / "cv_box.png", lambda p: box_plot_by_fold(by_fold, p))
    report["paths"] = {n: str(out / n) for n in ("cv_report.json", "cv_report.md", "cv_box.png")}
    return report
