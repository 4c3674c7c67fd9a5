"""The layout of a benchmark folder: cell names, where each cell's files live, the state file,
and reading finished cells back. The runner writes these files and the report reads them."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write_text
from medseg.errors import MedsegError

STATE_FILE = "benchmark.json"
CELL_FILE = "cell.json"


def _safe(text: str) -> str:
    """A folder-name-safe form of a loss spec; ``__`` is kept as the cell-name separator."""
    return re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text)).strip("-_")


@dataclass(frozen=True)
class Cell:
    model: str
    loss: str
    fold: int | None = None

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"__fold{self.fold}"
        return f"{self.model}__{_safe(self.loss)}{fold}"


def plan_cells(models: list[str], losses: list[str], folds: int | None = None) -> list[Cell]:
    """The grid, model-major, folds innermost."""
    fold_ids: list[int | None] = [None] if not folds else list(range(folds))
    return [Cell(m, loss, f) for m in models for loss in losses for f in fold_ids]


def cell_dir(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / "cells" / cell.name


def is_finished(out_dir: Path, cell: Cell) -> bool:
    return (cell_dir(out_dir, cell) / CELL_FILE).is_file()


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars, paths, tuples and dataclasses allowed)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def normalise_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluator's per-case, per-class records -> ``{"case", "class", metric: value}``."""
    out = []
    for r in records:
        low = {str(k).lower(): v for k, v in r.items()}
        case = next((low[k] for k in ("case", "case_id", "id") if k in low), None)
        cls = next((low[k] for k in ("class", "class_name", "label", "class_index") if k in low), None)
        if case is None or cls is None:
            raise MedsegError(f"evaluation record without a case id or class: {sorted(r)}")
        row: dict[str, Any] = {"case": str(case), "class": str(cls)}
        for k, v in low.items():
            if k in ("case", "case_id", "id", "class", "class_name", "label", "class_index"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = float(v)
        out.append(row)
    return out


def write_state(out_dir: Path, plan: dict[str, Any], status: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``STATE_FILE``: the plan and the status of every cell of its grid."""
    cells = plan_cells(plan["models"], plan["losses"], plan["folds"])
    rows = []
    for c in cells:
        row = {"name": c.name, "model": c.model, "loss": c.loss, "fold": c.fold}
        row.update(status.get(c.name, {}))
        if is_finished(out_dir, c):
            row["status"] = "done"
        row.setdefault("status", "pending")
        rows.append(row)
    write_json(
        out_dir / STATE_FILE, {"plan": plan, "cells": rows, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    )


def load_cells(out_dir: str | Path, plan: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The saved results of the finished cells of the plan (or of every cell folder)."""
    out_dir = Path(out_dir)
    if plan is None and (out_dir / STATE_FILE).is_file():
        plan = json.loads((out_dir / STATE_FILE).read_text())["plan"]
    if plan is not None:
        paths = [
            cell_dir(out_dir, c) / CELL_FILE
            for c in plan_cells(plan["models"], plan["losses"], plan["folds"])
        ]
    else:
        paths = sorted((out_dir / "cells").glob(f"*/{CELL_FILE}"))
    return [json.loads(p.read_text()) for p in paths if p.is_file()]
