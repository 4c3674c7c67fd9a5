"""Report figures (matplotlib Agg canvas, no pyplot): per-class bars, per-case box plots, paired comparison."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.metrics.records import class_order, metric_label


def _figure(**kw: Any):
    # a bare Figure renders with the Agg canvas: no pyplot, no global backend state, no display.
    # Deferred import: matplotlib costs ~0.8 s, paid only when a figure is drawn, not by
    # `import medseg.metrics` or the CLI's start-up.
    from matplotlib.figure import Figure

    return Figure(**kw)


def per_class_bar(summary: Mapping[str, Any], path: str | Path, metrics: Sequence[str]) -> None:
    """One panel per metric: per-class mean with ±1 std error bars."""
    classes = list(summary["classes"])
    fig = _figure(figsize=(max(4.0, 0.6 * len(classes) + 2) * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        means = [summary["per_class"][c]["metrics"][m]["mean"] for c in classes]
        stds = [summary["per_class"][c]["metrics"][m]["std"] for c in classes]
        x = np.arange(len(classes))
        ax.bar(x, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=3, color="tab:blue", alpha=0.8)
        for xi, v in zip(x, means):
            if not math.isfinite(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, classes, rotation=45, ha="right")
        ax.set_ylabel(metric_label(m))
        ax.set_title(f"{metric_label(m)} per class (mean ± std)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


def box_plot(records: Sequence[Mapping[str, Any]], path: str | Path, metrics: Sequence[str]) -> None:
    """One panel per metric: the distribution over cases for each class (undefined values left out)."""
    classes = class_order(records)
    fig = _figure(figsize=(max(4.0, 0.6 * len(classes) + 2) * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        data = []
        for c in classes:
            v = np.asarray([float(r.get(m, np.nan)) for r in records if str(r["class"]) == c])
            data.append(v[np.isfinite(v)])
        ax.boxplot([d if d.size else [np.nan] for d in data], showmeans=True)
        ax.set_xticks(np.arange(1, len(classes) + 1), classes, rotation=45, ha="right")
        ax.set_ylabel(metric_label(m))
        ax.set_title(f"{metric_label(m)} per case")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


def paired_plot(
    a: np.ndarray, b: np.ndarray, path: str | Path, metric: str, name_a: str, name_b: str, p_value: float
) -> None:
    """Left: run B against run A per case, with the identity line. Right: sorted differences B - A."""
    fig = _figure(figsize=(10, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(a, b, s=14, alpha=0.7)
    lo = float(np.nanmin(np.concatenate([a, b]))) if a.size else 0.0
    hi = float(np.nanmax(np.concatenate([a, b]))) if a.size else 1.0
    ax1.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
    ax1.set_xlabel(f"{name_a}: {metric_label(metric)}")
    ax1.set_ylabel(f"{name_b}: {metric_label(metric)}")
    ax1.set_title("per case")
    d = np.sort(b - a)
    colors = ["tab:green" if x > 0 else "tab:red" if x < 0 else "gray" for x in d]
    ax2.bar(np.arange(d.size), d, color=colors)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xlabel("cases (sorted)")
    ax2.set_ylabel(f"{metric_label(metric)} difference (B - A)")
    ptxt = "n/a" if not math.isfinite(p_value) else f"{p_value:.3g}"
    ax2.set_title(f"paired differences, Wilcoxon p = {ptxt}")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
