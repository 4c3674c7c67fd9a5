"""The per-case record format of evaluation reports and its files.

A *record* is one case x one class::

    {"case": str, "class": str, "class_index": int, "dice": float, ..., "nsd": float,
     "empty_target": bool, "empty_pred": bool, "tp": int, "fp": int, "fn": int, "tn": int}

``nan`` marks an undefined value; JSON stores it as ``null``. This module holds the field
names and display labels, the class order, and the CSV/JSON writing and reading that the
report (:mod:`medseg.metrics.report`), its figures and the paired comparison share.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.metrics.case import METRICS

COUNT_KEYS = ("tp", "fp", "fn", "tn")
FLAG_KEYS = ("empty_target", "empty_pred")
FIELDS = ("case", "class", "class_index", *METRICS, *FLAG_KEYS, *COUNT_KEYS)
LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sens",
    "specificity": "Spec",
    "precision": "Prec",
    "accuracy": "Acc",
    "hd": "HD",
    "hd95": "HD95",
    "assd": "ASSD",
    "nsd": "NSD",
}
DISTANCES = ("hd", "hd95", "assd")


def class_order(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Class names in class-index order (first appearance for records without an index)."""
    seen: dict[str, int] = {}
    for r in records:
        seen.setdefault(str(r["class"]), int(r.get("class_index", len(seen))))
    return sorted(seen, key=lambda n: (seen[n], n))


def metrics_present(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics of :data:`METRICS` that some record holds, in that order."""
    return [m for m in METRICS if any(m in r for r in records)]


def metric_label(m: str) -> str:
    """Axis label of a metric (distances carry their unit)."""
    return LABELS.get(m, m) + (" (mm or px)" if m in DISTANCES else "")


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN; null means "undefined"
    if isinstance(x, Path):
        return str(x)
    return x


def to_json(x: Any) -> str:
    return json.dumps(_jsonable(x), indent=2, allow_nan=False) + "\n"


def records_csv(records: Sequence[Mapping[str, Any]]) -> str:
    fields = [f for f in FIELDS if any(f in r for r in records)]
    fields += sorted({k for r in records for k in r} - set(fields))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in records:
        row = {}
        for f in fields:
            v = r.get(f, "")
            row[f] = repr(float(v)) if isinstance(v, float | np.floating) else csv_escape(v)
        w.writerow(row)
    return buf.getvalue()


# a spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_escape(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'`` (shown as text);
    ``'`` itself is escaped too, so :func:`csv_unescape` gives back the exact text."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def csv_unescape(value: Any) -> Any:
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def _parse_value(key: str, v: Any) -> Any:
    if key in ("case", "class"):
        return str(v)
    if key in FLAG_KEYS:
        return v if isinstance(v, bool) else str(v).strip().lower() == "true"
    if key in COUNT_KEYS or key == "class_index":
        return int(v)
    if key in METRICS:
        return float("nan") if v is None or v == "" else float(v)
    return v


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read records back from ``per_case.json`` or ``per_case.csv`` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        for name in ("per_case.json", "per_case.csv"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise DataError(f"{path}: no per_case.json or per_case.csv (write them with medseg evaluate)")
    try:
        if p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            rows = data["records"] if isinstance(data, dict) else data
        else:
            with open(p, newline="", encoding="utf-8") as f:
                rows = [{k: csv_unescape(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{p}: cannot read per-case records ({e})") from e
    out = []
    for i, row in enumerate(rows):
        if "case" not in row or "class" not in row:
            raise DataError(f"{p}: record {i} lacks 'case' or 'class'")
        try:
            out.append({k: _parse_value(k, v) for k, v in row.items()})
        except (TypeError, ValueError) as e:
            raise DataError(f"{p}: record {i} has a bad value ({e})") from e
    return out
