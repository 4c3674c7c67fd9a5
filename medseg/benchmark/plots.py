"""Benchmark figures (matplotlib, Agg backend): accuracy bars with confidence intervals,
the accuracy-versus-speed Pareto chart, and the training curves of all cells."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write
from medseg.benchmark.leaderboard import pareto_front


def _plt():
    # deferred: matplotlib (about 0.8 s) loads when a report draws its figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    _plt().close(fig)
    return path


def _label(row: dict[str, Any]) -> str:
    return f"{row['model']} / {row['loss']}"


def bar_chart(board: dict[str, Any], path: str | Path) -> Path:
    """Mean of the primary metric per cell (leaderboard order) with its bootstrap interval;
    bars of cells significantly worse than the best are drawn lighter."""
    plt = _plt()
    rows, primary = board["rows"], board["primary"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(rows) + 2), 4.0))
    means = [r[primary] for r in rows]
    lows = [
        max(0.0, m - r[f"{primary}_ci"][0]) if not math.isnan(r[f"{primary}_ci"][0]) else 0.0
        for m, r in zip(means, rows)
    ]
    highs = [
        max(0.0, r[f"{primary}_ci"][1] - m) if not math.isnan(r[f"{primary}_ci"][1]) else 0.0
        for m, r in zip(means, rows)
    ]
    colours = [
        "tab:green"
        if r["verdict"] == "best"
        else ("tab:blue" if r["verdict"] == "n.s." else "lightsteelblue")
        for r in rows
    ]
    x = range(len(rows))
    ax.bar(x, means, yerr=[lows, highs], capsize=3, color=colours, edgecolor="black", linewidth=0.5)
    ax.set_xticks(list(x), [_label(r) for r in rows], rotation=45, ha="right", fontsize=8)
    level = int(round(100 * board.get("level", 0.95)))
    ax.set_ylabel(f"mean {primary} ({level}% bootstrap CI)")
    finite = [m for m in means if not math.isnan(m)]
    if finite and max(finite) <= 1.0:
        ax.set_ylim(0, 1)
    ax.set_title(f"{primary}: green = best, blue = not significantly different, light = worse")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def pareto_chart(board: dict[str, Any], path: str | Path, *, speed: str = "infer_images_per_s") -> Path:
    """Primary metric versus throughput (log scale); the Pareto front is joined by a line."""
    plt = _plt()
    rows, primary = board["rows"], board["primary"]
    pts = [(r[primary], float(r.get(speed) or math.nan)) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    models = sorted({r["model"] for r in rows})
    losses = sorted({r["loss"] for r in rows})
    markers = "osD^v<>ph*"
    cmap = plt.get_cmap("tab10")
    for r, (acc, spd) in zip(rows, pts):
        if math.isnan(acc) or math.isnan(spd):
            continue
        ax.scatter(
            spd,
            acc,
            color=cmap(models.index(r["model"]) % 10),
            marker=markers[losses.index(r["loss"]) % len(markers)],
            s=50,
            edgecolor="black",
            linewidth=0.5,
        )
    front = sorted(pareto_front([(a, s) for a, s in pts]), key=lambda i: pts[i][1])
    if front:
        ax.plot(
            [pts[i][1] for i in front],
            [pts[i][0] for i in front],
            "--",
            color="grey",
            zorder=0,
            label="Pareto front",
        )
    for m in models:
        ax.scatter([], [], color=cmap(models.index(m) % 10), marker="o", label=m)
    for loss in losses:
        ax.scatter(
            [],
            [],
            color="white",
            edgecolor="black",
            marker=markers[losses.index(loss) % len(markers)],
            label=loss,
        )
    if any(not math.isnan(s) and s > 0 for _, s in pts):
        ax.set_xscale("log")
    ax.set_xlabel(speed.replace("_", " ").replace("images per s", "images/s"))
    ax.set_ylabel(f"mean {primary}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{primary} versus speed")
    return _save(fig, Path(path))


def training_curves(histories: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Training loss and validation Dice per epoch for every cell, one colour per model,
    one line style per loss (cell names are ``model__loss[__foldK]``)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted(histories)
    models = sorted({n.split("__")[0] for n in names})
    losses = sorted({n.split("__")[1] if "__" in n else "" for n in names})
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("tab10")
    for name in names:
        hist = histories[name]
        model = name.split("__")[0]
        loss = name.split("__")[1] if "__" in name else ""
        kw = {
            "color": cmap(models.index(model) % 10),
            "linestyle": styles[losses.index(loss) % len(styles)],
            "marker": "o",
            "markersize": 2.5,
            "linewidth": 1.2,
        }
        ep = [h["epoch"] for h in hist]
        ax[0].plot(ep, [h.get("train_loss", math.nan) for h in hist], label=name, **kw)
        val = [(h["epoch"], h["val_dice"]) for h in hist if h.get("val_dice") not in (None, "")]
        if val:
            ax[1].plot(*zip(*val), label=name, **kw)
    ax[0].set(title="training loss", xlabel="epoch", ylabel="loss")
    ax[1].set(title="validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
    if names:
        ax[1].legend(fontsize=6, loc="lower right", ncol=1 if len(names) < 10 else 2)
    fig.tight_layout()
    return _save(fig, Path(path))
