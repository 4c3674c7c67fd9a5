"""A self-contained HTML report: the leaderboard, how it was made, and the figures
embedded as base64 PNG (one file to mail or archive, no external assets)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from medseg.benchmark.tables import display_rows

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
     color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
tr.best td{background:#e6f4e6} tr.ns td{background:#eef3fb}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
code,pre{background:#f6f6f6;padding:2px 4px} pre{padding:8px;overflow-x:auto}
.note{color:#555;font-size:13px}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_html(
    board: dict[str, Any],
    *,
    title: str = "medseg benchmark",
    meta: dict[str, Any] | None = None,
    figures: dict[str, Path] | None = None,
    more_boards: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The page as a string. ``meta`` (command, data, budget, machine...) is shown as a
    definition list; ``figures`` maps captions to PNG files to embed; ``more_boards`` maps
    captions to further leaderboards (the cross-validated one of a K-fold benchmark)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append("<table>")
        for k, v in meta.items():
            parts.append(
                f"<tr><th class='l'>{html.escape(str(k))}</th>"
                f"<td class='l'><code>{html.escape(str(v))}</code></td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Leaderboard</h2>")
    parts += _board_table(board)
    level = int(round(100 * board.get("level", 0.95)))
    parts.append(
        "<p class='note'>Each case's score is the mean over its foreground classes; a cell's score is the "
        f"mean over cases, with a {level}% BCa bootstrap interval over cases. "
        f"<b>vs best</b>: two-sided Wilcoxon signed-rank test of the per-case {html.escape(board['primary'])} "
        "of the cell against the best cell on the same cases, Holm-adjusted over all comparisons; "
        f"<i>n.s.</i> means the difference is not significant at {board.get('alpha', 0.05):g} "
        "(green: best, blue: indistinguishable from the best). Mean case rank: the cells ranked within "
        "every case, averaged. Throughput and memory were measured on the machine below, which may be "
        "shared: compare them within one run only.</p>"
    )
    for caption, extra in (more_boards or {}).items():
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts += _board_table(extra)
    for caption, path in (figures or {}).items():
        if path is not None and Path(path).is_file():
            parts.append(f"<h2>{html.escape(caption)}</h2>{_img(Path(path), caption)}")
    parts.append("</body></html>\n")
    return "".join(parts)


def _board_table(board: dict[str, Any]) -> list[str]:
    """One leaderboard as HTML table rows (best row green, rows not separable from it blue)."""
    header, rows = display_rows(board)
    left = {"model", "loss"}
    parts = ["<table><tr>"]
    parts += [f"<th class='{'l' if h in left else ''}'>{html.escape(h)}</th>" for h in header]
    parts.append("</tr>")
    for r, row in zip(board["rows"], rows):
        cls = {"best": "best", "n.s.": "ns"}.get(r.get("verdict"), "")
        parts.append(f"<tr class='{cls}'>")
        parts += [
            f"<td class='{'l' if h in left else ''}'>{html.escape(c)}</td>" for h, c in zip(header, row)
        ]
        parts.append("</tr>")
    parts.append("</table>")
    return parts
