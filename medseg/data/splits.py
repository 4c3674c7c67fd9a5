"""Train / validation / test splits: split files when the dataset ships them, else a seeded split.

Split files (``train.txt``, ``val.list``, Synapse ``lists/lists_Synapse/test_vol.txt``...) are
read as lists of case ids. Without them the cases are split at random with a fixed seed, group
by group: the slices of one volume and the frames of one patient never straddle two splits
(leaking a patient between training and test inflates every score).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.config import DataConfig
from medseg.data.readers import file_id
from medseg.errors import DataError

SPLIT_NAMES = {
    "train": ("train.txt", "train_slices.list", "train.list", "train_slices.txt"),
    "val": ("val.txt", "val.list", "valid.txt"),
    "test": ("test.txt", "test.list", "test_vol.txt"),
}
SPLIT_DIRS = (".", "lists/lists_Synapse", "splits")


def group_key(case_id: str) -> str:
    """Cases sharing a group (slices of a volume, frames of a patient) stay in the same split."""
    return re.sub(r"(_frame\d+)?(_slice_?\d+)?$", "", case_id) or case_id


def _read_id_list(path: Path) -> list[str]:
    return [
        file_id(Path(ln.split()[0]))
        for ln in path.read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def read_split_files(root: Path | None) -> dict[str, tuple[Path, list[str]]]:
    """``{split: (file, ids)}`` from the first folder of :data:`SPLIT_DIRS` holding any split file."""
    found: dict[str, tuple[Path, list[str]]] = {}
    if root is None or not root.is_dir():
        return found
    for d in SPLIT_DIRS:
        for split, names in SPLIT_NAMES.items():
            if split in found:
                continue
            for n in names:
                p = root / d / n
                if p.is_file():
                    found[split] = (p, _read_id_list(p))
                    break
        if found:
            break
    return found


def _carve(
    ids: list[str], fraction: float, rng: np.random.Generator, min_one: bool
) -> tuple[list[str], list[str]]:
    """Hold out ``fraction`` of the groups of ``ids``: returns (kept, held out)."""
    groups = sorted({group_key(i) for i in ids})
    rng.shuffle(groups)
    n = int(round(fraction * len(groups)))
    if n == 0 and fraction > 0 and min_one and len(groups) >= 2:
        n = 1
    held = set(groups[:n])
    return [i for i in ids if group_key(i) not in held], [i for i in ids if group_key(i) in held]


def _splits_from_files(
    files: dict[str, tuple[Path, list[str]]], ids: list[str], root: Path | None, cfg: DataConfig
) -> dict[str, list[str]]:
    known = set(ids)
    out: dict[str, list[str]] = {}
    for split, (path, listed) in files.items():
        missing = [i for i in listed if i not in known]
        if missing:
            raise DataError(
                f"{path}: lists '{missing[0]}' but no such case exists under {root} "
                f"({len(missing)} missing ids)"
            )
        out[split] = listed
    if "train" not in out:
        taken = set(out.get("val", [])) | set(out.get("test", []))
        out["train"] = [i for i in ids if i not in taken]
    if "val" not in out:
        rng = np.random.default_rng(cfg.split.seed)
        out["train"], out["val"] = _carve(out["train"], cfg.split.val_fraction, rng, True)
    out.setdefault("test", [])
    return out


def split_ids(ids: list[str], root: Path | None, cfg: DataConfig) -> dict[str, list[str]]:
    """train/val/test id lists: from split files when present, else a seeded group-aware split."""
    files = read_split_files(root)
    if files:
        out = _splits_from_files(files, ids, root, cfg)
    else:
        rng = np.random.default_rng(cfg.split.seed)
        rest, test = _carve(list(ids), cfg.split.test_fraction, rng, True)
        frac = cfg.split.val_fraction / max(1e-9, 1.0 - cfg.split.test_fraction)
        train, val = _carve(rest, min(frac, 0.99), rng, True)
        out = {"train": train, "val": val, "test": test}
    if not out["train"]:
        raise DataError(f"{root}: no training cases after splitting {len(ids)} cases")
    return out
