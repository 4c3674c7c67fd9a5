"""Turn the finished cells of a benchmark folder into the leaderboard files and figures."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from medseg.atomic import atomic_write_text
from medseg.benchmark.cells import STATE_FILE, load_cells
from medseg.benchmark.html import render_html
from medseg.benchmark.leaderboard import DEFAULT_METRICS, build_leaderboard
from medseg.benchmark.plots import bar_chart, pareto_chart, training_curves
from medseg.benchmark.tables import to_csv, to_markdown

REPORT_FILES = (
    "leaderboard.md",
    "leaderboard.csv",
    "leaderboard.json",
    "leaderboard.html",
    "bars.png",
    "pareto.png",
    "curves.png",
)


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else None


def _group_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Facts of one model x loss row from its fold cells (medians; the largest memory)."""
    first = infos[0]
    row = {"model": first["model"], "loss": first["loss"], "folds": len(infos)}
    for key in (
        "params",
        "gflops",
        "train_images_per_s",
        "infer_images_per_s",
        "train_seconds",
        "epochs",
        "best_val_dice",
        "eval_seconds",
    ):
        row[key] = _median([i.get(key) for i in infos])
    mem = [float(m) for i in infos if (m := i.get("peak_memory_mb")) is not None]
    row["peak_memory_mb"] = max(mem) if mem else None
    row["stop_reason"] = ",".join(sorted({str(i.get("stop_reason")) for i in infos}))
    return row


OOF_FILES = ("leaderboard_oof.md", "leaderboard_oof.csv", "leaderboard_oof.json")
OOF_CAPTION = "Cross-validated leaderboard (out-of-fold validation cases, each scored once, last checkpoints)"


def collect(
    cells: list[dict[str, Any]], key_records: str = "records"
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Per-case records keyed by ``model__loss`` (folds pooled, cases keyed by fold),
    per-row facts and per-cell training histories. ``key_records``: ``"records"`` (the test
    cases) or ``"oof_records"`` (a K-fold cell's out-of-fold validation cases)."""
    records: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        info = dict(cell["info"])
        if cell.get("history"):
            # seconds spent in training epochs, from the trainer's log (the same for resumed cells)
            info["train_seconds"] = sum(float(h.get("epoch_seconds") or 0) for h in cell["history"])
        key = cell["cell"].split("__fold")[0]
        groups.setdefault(key, []).append(info)
        histories[cell["cell"]] = cell.get("history", [])
        for r in cell.get(key_records, []):
            records.append({**r, "cell": key, "fold": info.get("fold")})
    return records, {k: _group_info(v) for k, v in groups.items()}, histories


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )


def build_report(
    out_dir: str | Path,
    *,
    primary: str | None = None,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    title: str | None = None,
) -> dict[str, Any]:
    """Write ``leaderboard.{md,csv,json,html}``, ``bars.png``, ``pareto.png``, ``curves.png``
    into ``out_dir`` from its finished cells. Returns ``{"board": ..., "paths": {...}}``."""
    out_dir = Path(out_dir)
    state = json.loads((out_dir / STATE_FILE).read_text()) if (out_dir / STATE_FILE).is_file() else {}
    plan = state.get("plan")
    cells = load_cells(out_dir, plan)
    if not cells:
        raise FileNotFoundError(f"{out_dir}: no finished benchmark cells")
    records, infos, histories = collect(cells)
    primary = primary or (plan or {}).get("primary", "dice")
    present = [m for m in metrics if any(m in r for r in records)]
    board = build_leaderboard(records, infos, metrics=present or [primary], primary=primary)
    paths = {name: out_dir / name for name in REPORT_FILES}
    _write_board(out_dir, "leaderboard", board)
    oof_board = _write_oof_board(out_dir, cells, present or [primary], primary)
    if oof_board is not None:
        paths.update({name: out_dir / name for name in OOF_FILES})
    bar_chart(board, paths["bars.png"])
    pareto_chart(board, paths["pareto.png"])
    training_curves(histories, paths["curves.png"])
    meta: dict[str, Any] = {}
    if plan:
        budget = plan.get("budget_s")
        meta = {
            "data": plan.get("data") or "(from config)",
            "config": plan.get("config") or "(defaults)",
            "models": ", ".join(f"{m} {plan['model_options'].get(m) or ''}".strip() for m in plan["models"]),
            "losses": ", ".join(plan["losses"]),
            "budget per cell": f"{budget:.0f} s" if budget else "-",
            "epochs": plan.get("epochs") or "-",
            "folds": f"{plan['folds']} ({plan['fold_method']})" if plan.get("folds") else "single split",
            "seed": plan.get("seed"),
            "overrides": " ".join(plan.get("overrides", []) + plan.get("auto_overrides", [])) or "-",
        }
    meta["cells finished"] = f"{len(cells)} of {len(state.get('cells', cells))}"
    meta["machine"] = machine_description()
    figures = {
        "Mean accuracy with confidence intervals": paths["bars.png"],
        "Accuracy versus inference speed (Pareto front)": paths["pareto.png"],
        "Training curves": paths["curves.png"],
    }
    atomic_write_text(
        paths["leaderboard.html"],
        render_html(
            board,
            title=title or f"medseg benchmark: {out_dir.name}",
            meta=meta,
            figures=figures,
            more_boards=None if oof_board is None else {OOF_CAPTION: oof_board},
        ),
    )
    out: dict[str, Any] = {"board": board, "paths": {k: str(v) for k, v in paths.items()}, "meta": meta}
    if oof_board is not None:
        out["oof_board"] = oof_board
    return out


def _write_oof_board(
    out_dir: Path, cells: list[dict[str, Any]], metrics: list[str], primary: str
) -> dict[str, Any] | None:
    """The cross-validated leaderboard of a K-fold benchmark (``leaderboard_oof.*``): every
    model x loss row scored on the out-of-fold validation cases, each case exactly once; None
    when the cells hold no out-of-fold records (a single split, or repeated hold-out)."""
    records, infos, _ = collect(cells, "oof_records")
    if not records:
        return None
    board = build_leaderboard(records, infos, metrics=metrics, primary=primary)
    _write_board(out_dir, "leaderboard_oof", board)
    return board


def _write_board(out_dir: Path, stem: str, board: dict[str, Any]) -> None:
    """``STEM.md``, ``STEM.csv`` and ``STEM.json`` of one leaderboard, each written atomically."""
    atomic_write_text(out_dir / f"{stem}.md", to_markdown(board))
    atomic_write_text(out_dir / f"{stem}.csv", to_csv(board))
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(board, indent=1, default=str))
