"""Leaderboard tables: Markdown for docs, CSV for analysis, a rich table for the terminal.

All three come from the dict returned by :func:`medseg.benchmark.leaderboard.build_leaderboard`.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from rich.table import Table

from medseg.benchmark.leaderboard import higher_is_better


def _sig(v: float) -> str:
    """Three significant digits without exponents for ordinary magnitudes."""
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


COST_COLUMNS = (
    ("params", "params (M)", lambda v: _sig(v / 1e6)),
    ("gflops", "GFLOPs", lambda v: _sig(v)),
    ("train_images_per_s", "train img/s", lambda v: _sig(v)),
    ("infer_images_per_s", "infer img/s", lambda v: _sig(v)),
    ("peak_memory_mb", "peak MB", lambda v: _sig(v)),
    ("train_seconds", "train s", lambda v: f"{v:.0f}"),
    ("epochs", "epochs", lambda v: f"{int(v)}"),
)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _metric(v: Any, metric: str) -> str:
    if _is_missing(v):
        return "-"
    return f"{v:.4f}" if higher_is_better(metric) else f"{v:.2f}"


def _undefined(n: Any) -> str:
    """Marks a mean that left undefined values out, e.g. ``" (3 n/a)"``."""
    return "" if _is_missing(n) or not n else f" ({int(n)} n/a)"


def _p(v: Any) -> str:
    if _is_missing(v):
        return "-"
    return "<0.001" if v < 1e-3 else f"{v:.3f}"


def display_rows(board: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells shared by the Markdown, HTML and terminal tables."""
    primary, classes, metrics = board["primary"], board["classes"], board["metrics"]
    level = int(round(100 * board.get("level", 0.95)))
    header = ["rank", "model", "loss", f"{primary} ({level}% CI)"]
    if len(classes) > 1:
        header += [f"{primary} {c}" for c in classes]
    header += [m for m in metrics if m != primary]
    header += ["vs best (Holm p)", "mean case rank", "cases"]
    present = [c for c in COST_COLUMNS if any(not _is_missing(r.get(c[0])) for r in board["rows"])]
    header += [c[1] for c in present]
    lines = []
    for r in board["rows"]:
        lo, hi = r.get(f"{primary}_ci", (math.nan, math.nan))
        ci = "" if _is_missing(lo) else f" [{_metric(lo, primary)}, {_metric(hi, primary)}]"
        name = r["model"] + (f" (fold {r['fold']})" if not _is_missing(r.get("fold")) else "")
        row = [f"{r['rank']:g}", name, str(r["loss"]), _metric(r[primary], primary) + ci]
        if len(classes) > 1:
            row += [_metric(r.get(f"{primary}/{c}"), primary) for c in classes]
        row += [_metric(r.get(m), m) + _undefined(r.get(f"{m}_undefined")) for m in metrics if m != primary]
        verdict = r.get("verdict", "")
        row.append("best" if verdict == "best" else f"{verdict} ({_p(r.get('p_holm'))})")
        row.append("-" if _is_missing(r.get("mean_case_rank")) else f"{r['mean_case_rank']:.2f}")
        row.append(str(r.get("n_cases", "")))
        row += ["-" if _is_missing(r.get(key)) else fmt(r[key]) for key, _, fmt in present]
        lines.append(row)
    return header, lines


def to_markdown(board: dict[str, Any]) -> str:
    header, rows = display_rows(board)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def to_csv(board: dict[str, Any]) -> str:
    """One row per cell with raw (unformatted) numbers: every metric, per class, CI, ranks,
    statistics and costs."""
    primary = board["primary"]
    keys: list[str] = []
    for r in board["rows"]:
        for k in r:
            if k not in keys and k != f"{primary}_ci":
                keys.append(k)
    keys += [f"{primary}_ci_low", f"{primary}_ci_high"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in board["rows"]:
        lo, hi = r.get(f"{primary}_ci", (math.nan, math.nan))
        row = {k: ("" if _is_missing(r.get(k)) else r.get(k)) for k in keys}
        row[f"{primary}_ci_low"], row[f"{primary}_ci_high"] = (
            "" if _is_missing(lo) else lo,
            "" if _is_missing(hi) else hi,
        )
        writer.writerow(row)
    return buf.getvalue()


def to_rich(board: dict[str, Any], title: str = "leaderboard"):
    header, rows = display_rows(board)
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h in ("model", "loss") else "right")
    for row in rows:
        table.add_row(*row)
    table.caption = (
        f"paired Wilcoxon signed-rank test of per-case {board['primary']} against the best cell, "
        f"Holm-adjusted; n.s. = not significant at {board.get('alpha', 0.05):g}"
    )
    return table
