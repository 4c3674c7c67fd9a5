"""Evaluation reports: per-case x per-class records, summaries, tables and files people can read.

A *record* is one case x one class::

    {"case": str, "class": str, "class_index": int, "dice": float, ..., "nsd": float,
     "empty_target": bool, "empty_pred": bool, "tp": int, "fp": int, "fn": int, "tn": int}

``nan`` marks an undefined value (e.g. HD95 when exactly one mask is empty under the default
policy); summaries exclude it from means and count it instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from medseg.atomic import atomic_write, atomic_write_text
from medseg.metrics.case import HIGHER_IS_BETTER, METRICS
from medseg.metrics.overlap import OVERLAP_METRICS, overlap_from_counts
from medseg.metrics.plots import box_plot, per_class_bar
from medseg.metrics.records import (
    COUNT_KEYS,
    DISTANCES,
    FLAG_KEYS,
    LABELS,
    class_order,
    metrics_present,
    records_csv,
    to_json,
)

# ---------------------------------------------------------------- records


def case_records(
    case_id: str, per_class: Mapping[int, Mapping[str, Any]], class_names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Turn :func:`~medseg.metrics.evaluate_case` output into records (one per class)."""
    out = []
    for c in sorted(per_class):
        vals = per_class[c]
        if class_names is not None and c >= len(class_names):
            raise ValueError(f"class index {c} has no name: class_names has {len(class_names)} entries")
        rec: dict[str, Any] = {"case": str(case_id), "class": class_names[c] if class_names else f"class_{c}"}
        rec["class_index"] = int(c)
        for m in METRICS:
            rec[m] = float(vals.get(m, float("nan")))
        for f in FLAG_KEYS:
            rec[f] = bool(vals.get(f, False))
        for k in COUNT_KEYS:
            if k in vals:
                rec[k] = int(vals[k])
        out.append(rec)
    return out


# ---------------------------------------------------------------- summaries


def describe(values: Iterable[float]) -> dict[str, float | int]:
    """mean, sample std (ddof=1), median, quartiles, IQR, min, max over finite values; nan count."""
    a = np.asarray([float(v) for v in values], dtype=np.float64)
    ok = a[np.isfinite(a)]
    n_bad = int(a.size - ok.size)
    if ok.size == 0:
        nan = float("nan")
        return {
            "mean": nan,
            "std": nan,
            "median": nan,
            "q1": nan,
            "q3": nan,
            "iqr": nan,
            "min": nan,
            "max": nan,
            "n": 0,
            "n_nan": n_bad,
        }
    q1, med, q3 = (float(x) for x in np.percentile(ok, [25, 50, 75]))
    return {
        "mean": float(ok.mean()),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": float(ok.min()),
        "max": float(ok.max()),
        "n": int(ok.size),
        "n_nan": n_bad,
    }


def _micro(recs: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    if not recs or not all(all(k in r for k in COUNT_KEYS) for r in recs):
        return None
    tot = [sum(int(r[k]) for r in recs) for k in COUNT_KEYS]
    return overlap_from_counts(*tot)


def summarize(records: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class statistics, empty-case counts, macro and micro aggregates.

    - ``per_class[name]["metrics"][m]``: :func:`describe` of the per-case values of class ``name``.
    - ``per_class[name]["empty"]``: how many cases had an empty target, an empty prediction, both,
      or exactly one (the cases whose distances are ``nan`` under the default policy).
    - ``per_class[name]["micro"]``: overlap metrics from the confusion counts summed over cases.
    - ``macro[m]``: mean over classes of the per-class means (the usual "mean Dice").
    - ``micro[m]``: overlap metrics from counts summed over all cases and classes.
    - ``per_case[m]``: :func:`describe` of each case's mean over classes.
    """
    if not records:
        raise ValueError("no records to summarize")
    metrics = list(metrics) if metrics is not None else metrics_present(records)
    classes = class_order(records)
    cases = list(dict.fromkeys(str(r["case"]) for r in records))
    per_class: dict[str, Any] = {}
    for name in classes:
        recs = [r for r in records if str(r["class"]) == name]
        et = [bool(r.get("empty_target", False)) for r in recs]
        ep = [bool(r.get("empty_pred", False)) for r in recs]
        per_class[name] = {
            "class_index": int(recs[0].get("class_index", classes.index(name))),
            "n_cases": len(recs),
            "empty": {
                "target": sum(et),
                "pred": sum(ep),
                "both": sum(a and b for a, b in zip(et, ep)),
                "one_sided": sum(a != b for a, b in zip(et, ep)),
            },
            "metrics": {m: describe(r.get(m, float("nan")) for r in recs) for m in metrics},
            "micro": _micro(recs),
        }
    macro = {}
    for m in metrics:
        means = [per_class[c]["metrics"][m]["mean"] for c in classes]
        finite = [x for x in means if math.isfinite(x)]
        macro[m] = float(np.mean(finite)) if finite else float("nan")
    per_case = {}
    for m in metrics:
        case_means = []
        for cid in cases:
            vals = [float(r.get(m, float("nan"))) for r in records if str(r["case"]) == cid]
            vals = [v for v in vals if math.isfinite(v)]
            case_means.append(float(np.mean(vals)) if vals else float("nan"))
        per_case[m] = describe(case_means)
    return {
        "n_cases": len(cases),
        "classes": classes,
        "metrics": metrics,
        "per_class": per_class,
        "macro": macro,
        "micro": _micro(records),
        "per_case": per_case,
    }


def _fmt(m: str, x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.2f}" if m in DISTANCES else f"{x:.3f}"


def summary_table(summary: Mapping[str, Any], metrics: Sequence[str] | None = None, title: str | None = None):
    """A rich Table: one row per class (mean ± std, [n_nan] when values were undefined) and a macro row."""
    metrics = list(metrics) if metrics is not None else list(summary["metrics"])
    table = Table(title=title or f"{summary['n_cases']} cases", show_lines=False)
    table.add_column("class", style="bold")
    for m in metrics:
        table.add_column(LABELS.get(m, m), justify="right")
    table.add_column("empty gt/pred", justify="right")
    for name in summary["classes"]:
        pc = summary["per_class"][name]
        cells = []
        for m in metrics:
            st = pc["metrics"][m]
            cell = f"{_fmt(m, st['mean'])} ± {_fmt(m, st['std'])}"
            if st["n_nan"]:
                cell += f" [{st['n_nan']} nan]"
            cells.append(cell)
        table.add_row(name, *cells, f"{pc['empty']['target']}/{pc['empty']['pred']}")
    table.add_row("macro", *[_fmt(m, summary["macro"][m]) for m in metrics], "", style="italic")
    return table


def summary_markdown(summary: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str:
    """The summary as Markdown: mean ± std, median [IQR], undefined counts, empty cases, definitions."""
    metrics = list(summary["metrics"])
    lines = [f"# Evaluation report ({summary['n_cases']} cases)", ""]
    if meta:
        lines += [f"- **{k}**: {v}" for k, v in meta.items()] + [""]
    lines += ["## Mean ± std (per class)", ""]
    lines.append("| class | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |")
    lines.append("|---|" + "---:|" * len(metrics))
    for name in summary["classes"]:
        st = summary["per_class"][name]["metrics"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{_fmt(m, st[m]['mean'])} ± {_fmt(m, st[m]['std'])}" for m in metrics)
            + " |"
        )
    lines.append("| **macro** | " + " | ".join(_fmt(m, summary["macro"][m]) for m in metrics) + " |")
    if summary.get("micro"):
        lines.append(
            "| **micro** | "
            + " | ".join(_fmt(m, summary["micro"][m]) if m in OVERLAP_METRICS else "" for m in metrics)
            + " |"
        )
    lines += ["", "## Median [IQR] (per class)", ""]
    lines.append("| class | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |")
    lines.append("|---|" + "---:|" * len(metrics))
    for name in summary["classes"]:
        st = summary["per_class"][name]["metrics"]
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{_fmt(m, st[m]['median'])} [{_fmt(m, st[m]['q1'])}, {_fmt(m, st[m]['q3'])}]"
                for m in metrics
            )
            + " |"
        )
    lines += ["", "## Empty cases and undefined values", ""]
    lines.append(
        "| class | cases | empty target | empty pred | both empty | one side empty | undefined (nan) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for name in summary["classes"]:
        pc = summary["per_class"][name]
        e = pc["empty"]
        nans = ", ".join(
            f"{LABELS.get(m, m)} {pc['metrics'][m]['n_nan']}" for m in metrics if pc["metrics"][m]["n_nan"]
        )
        lines.append(
            f"| {name} | {pc['n_cases']} | {e['target']} | {e['pred']} | {e['both']} | {e['one_sided']} | {nans or '-'} |"
        )
    lines += [
        "",
        "Means and std exclude undefined (nan) values; the table above counts them. Both masks empty: "
        "Dice/IoU/NSD 1, distances 0. Distances are in mm when a spacing was given, else pixels. "
        "Definitions: docs/metrics.md.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- worst cases


def worst_cases(
    records: Sequence[Mapping[str, Any]], metric: str = "dice", k: int = 8, class_name: str | None = None
) -> list[dict[str, Any]]:
    """The ``k`` worst cases by ``metric`` (lowest Dice, highest HD95, ...), worst first.

    A case's score is the mean of the metric over its classes (undefined values skipped), or its
    value for ``class_name``. Cases whose score is undefined for every class are ranked last.
    Returns ``[{"case", "metric", "score", "per_class": {class: value}}]``.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(HIGHER_IS_BETTER)}")
    by_case: dict[str, dict[str, float]] = {}
    for r in records:
        if class_name is not None and str(r["class"]) != class_name:
            continue
        by_case.setdefault(str(r["case"]), {})[str(r["class"])] = float(r.get(metric, float("nan")))
    if class_name is not None and not by_case:
        raise ValueError(f"no records for class {class_name!r}")
    rows = []
    for cid, vals in by_case.items():
        finite = [v for v in vals.values() if math.isfinite(v)]
        rows.append(
            {
                "case": cid,
                "metric": metric,
                "score": float(np.mean(finite)) if finite else float("nan"),
                "per_class": vals,
            }
        )
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    rows.sort(
        key=lambda r: (not math.isfinite(r["score"]), sign * r["score"] if math.isfinite(r["score"]) else 0.0)
    )
    return rows[: max(0, int(k))]


# ---------------------------------------------------------------- files


def write_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    plots: bool = True,
    plot_metrics: Sequence[str] = ("dice", "hd95"),
) -> dict[str, Path]:
    """Write the evaluation report into ``out_dir``, each file atomically (temp file + os.replace).

    Files (keys of the returned dict): ``per_case_csv`` (per_case.csv), ``per_case_json``
    (per_case.json: {"meta", "records"}), ``summary_json`` (summary.json), ``summary_md``
    (summary.md), and with ``plots``: ``bar_png`` (per_class_bar.png, mean ± std per class) and
    ``box_png`` (per_case_box.png, per-case distribution per class). ``class_names`` orders the
    classes (all class names of the task; classes without records are skipped). ``meta`` (e.g.
    spacing, empty policy, checkpoint) is stored in the JSON files and the Markdown header.
    """
    if not records:
        raise ValueError("no records to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = [dict(r) for r in records]
    if class_names is not None:
        order = {n: i for i, n in enumerate(class_names)}
        unknown = {str(r["class"]) for r in recs} - set(order)
        if unknown:
            raise ValueError(f"records have classes {sorted(unknown)} not in class_names {list(class_names)}")
        case_pos = {c: i for i, c in enumerate(dict.fromkeys(str(r["case"]) for r in recs))}
        recs.sort(key=lambda r: (case_pos[str(r["case"])], order[str(r["class"])]))
        for r in recs:
            r.setdefault("class_index", order[str(r["class"])])
    summary = summarize(recs)
    meta = dict(meta or {})
    paths: dict[str, Path] = {
        "per_case_csv": atomic_write_text(out / "per_case.csv", records_csv(recs)),
        "per_case_json": atomic_write_text(out / "per_case.json", to_json({"meta": meta, "records": recs})),
        "summary_json": atomic_write_text(out / "summary.json", to_json({"meta": meta, **summary})),
        "summary_md": atomic_write_text(out / "summary.md", summary_markdown(summary, meta)),
    }
    if plots:
        metrics = [m for m in plot_metrics if m in summary["metrics"]]
        paths["bar_png"] = atomic_write(
            out / "per_class_bar.png", lambda p: per_class_bar(summary, p, metrics)
        )
        paths["box_png"] = atomic_write(out / "per_case_box.png", lambda p: box_plot(recs, p, metrics))
    return paths
