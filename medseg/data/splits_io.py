"""Split files as JSON: the run's ``splits.json`` and nnU-Net's ``splits_final.json``.

``splits.json`` (written into every run folder, atomically) records the ids a run trained,
validated and was tested on, with how they were chosen::

    {"format": "medseg-splits/1", "source": "seeded", "seed": 0, "folds": 5, "fold": 2,
     "stratified": true, "train": [...], "val": [...], "test": [...],
     "cross_validation": [{"train": [...], "val": [...]}, ...]}

``cross_validation`` is the whole fold table (nnU-Net form) when the run is one fold of a
cross-validation, else ``[]``. nnU-Net's ``splits_final.json`` is a bare list of
``{"train": [...], "val": [...]}``, one per fold (Isensee et al., Nature Methods 2021).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.atomic import atomic_write_text
from medseg.errors import DataError

SPLITS_FILE = "splits.json"
NNUNET_SPLITS_FILE = "splits_final.json"
FORMAT = "medseg-splits/1"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read JSON ({e})") from None


def _id_list(value: Any, path: Path, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: {where} must be a list of case ids (strings)")
    return list(value)


def _fold_table(value: Any, path: Path) -> list[dict[str, list[str]]]:
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a list of {{'train': [...], 'val': [...]}}, one per fold")
    out = []
    for f, e in enumerate(value):
        if not isinstance(e, dict) or "train" not in e or "val" not in e:
            raise DataError(f"{path}: fold {f} must be an object with 'train' and 'val' lists")
        out.append(
            {
                "train": _id_list(e["train"], path, f"fold {f} 'train'"),
                "val": _id_list(e["val"], path, f"fold {f} 'val'"),
            }
        )
    return out


def read_nnunet_splits(path: str | Path) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json``: one ``{"train", "val"}`` per fold, checked for shape."""
    p = Path(path)
    return _fold_table(_load_json(p), p)


def write_nnunet_splits(path: str | Path, folds: Sequence[Mapping[str, Sequence[str]]]) -> Path:
    """Write ``folds`` as nnU-Net's ``splits_final.json`` (atomically)."""
    table = [{"train": list(f["train"]), "val": list(f["val"])} for f in folds]
    return atomic_write_text(Path(path), json.dumps(table, indent=2) + "\n")


def write_splits(
    path: str | Path,
    splits: Mapping[str, Sequence[str]],
    *,
    source: str,
    seed: int | None = None,
    folds: int | None = None,
    fold: int | None = None,
    stratified: bool = False,
    cross_validation: Sequence[Mapping[str, Sequence[str]]] = (),
) -> Path:
    """Write a run's ``splits.json`` (atomically: a crash leaves the old file or the new one)."""
    doc = {
        "format": FORMAT,
        "source": source,
        "seed": seed,
        "folds": folds,
        "fold": fold,
        "stratified": bool(stratified),
        **{k: list(splits.get(k, [])) for k in ("train", "val", "test")},
        "cross_validation": [{"train": list(f["train"]), "val": list(f["val"])} for f in cross_validation],
    }
    return atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")


def read_splits(path: str | Path) -> dict[str, Any]:
    """Read a run's ``splits.json`` back (the ``train``/``val``/``test`` lists are checked)."""
    p = Path(path)
    doc = _load_json(p)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f'{p}: not a medseg splits file (expected "format": "{FORMAT}")')
    for k in ("train", "val", "test"):
        doc[k] = _id_list(doc.get(k, []), p, f"'{k}'")
    doc["cross_validation"] = _fold_table(doc.get("cross_validation", []), p)
    return doc
