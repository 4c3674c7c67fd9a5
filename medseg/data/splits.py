"""Train / validation / test splits: split files when the dataset ships them, else a seeded split.

Split files (``train.txt``, ``val.list``, Synapse ``lists/lists_Synapse/test_vol.txt``...) are
read as lists of case ids. Without them the cases are split at random with a fixed seed, group
by group: the slices of one volume and the frames of one patient never straddle two splits
(leaking a patient between training and test inflates every score).

With ``data.split.folds: K`` the split is one fold of a K-fold cross-validation
(:mod:`medseg.data.folds`): the fixed test cases (split files, else the seeded
``test_fraction`` carve, the same cases as without folds) stay out, the rest is cut into K
folds, and fold ``data.split.fold`` validates. An nnU-Net ``splits_final.json`` in the data
folder defines the folds instead (then K must match it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

from medseg.data.config import DataConfig
from medseg.data.folds import FoldPlan, assign_folds, plan_from_nnunet
from medseg.data.readers import file_id
from medseg.data.splits_io import NNUNET_SPLITS_FILE, read_nnunet_splits, read_splits, write_splits
from medseg.errors import ConfigError, DataError

Strata = Mapping[str, Collection[int]] | Callable[[], Mapping[str, Collection[int]]]

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


class SplitIds(dict[str, list[str]]):
    """``{"train", "val", "test"}`` -> case ids, and how they were chosen (``source``; ``plan``:
    the whole cross-validation table when the split is one fold of it)."""

    def __init__(self, splits: Mapping[str, list[str]], source: str, plan: FoldPlan | None = None):
        super().__init__(splits)
        self.source = source
        self.plan = plan


def find_nnunet_splits(root: Path | None) -> Path | None:
    """nnU-Net's ``splits_final.json`` in the data folder (or one of :data:`SPLIT_DIRS`)."""
    if root is None or not root.is_dir():
        return None
    return next(
        (root / d / NNUNET_SPLITS_FILE for d in SPLIT_DIRS if (root / d / NNUNET_SPLITS_FILE).is_file()), None
    )


def _test_and_pool(ids: list[str], root: Path | None, cfg: DataConfig) -> tuple[list[str], list[str]]:
    """The fixed test ids and the rest (the cross-validation pool), in the order of ``ids``."""
    files = read_split_files(root)
    if files:
        listed = _splits_from_files(files, ids, root, cfg)
        test, pooled = listed["test"], set(listed["train"]) | set(listed["val"])
        pooled -= set(test)
        return test, [i for i in ids if i in pooled]
    rest, test = _carve(list(ids), cfg.split.test_fraction, np.random.default_rng(cfg.split.seed), True)
    return test, rest


def _nnunet_plan(path: Path, ids: list[str], root: Path | None, cfg: DataConfig) -> FoldPlan:
    table = read_nnunet_splits(path)
    listed = {i for f in table for i in f["train"] + f["val"]}
    missing = sorted(listed - set(ids))
    if missing:
        raise DataError(f"{path}: lists '{missing[0]}' but no such case exists ({len(missing)} missing ids)")
    files = read_split_files(root)
    test = _splits_from_files(files, ids, root, cfg)["test"] if "test" in files else []
    test = test or [i for i in ids if i not in listed]
    plan = plan_from_nnunet(table, test, str(path))
    if cfg.split.folds is not None and plan.k != cfg.split.folds:
        raise ConfigError(f"{path}: defines {plan.k} folds but data.split.folds is {cfg.split.folds}")
    return plan


def fold_plan(ids: list[str], root: Path | None, cfg: DataConfig, strata: Strata | None = None) -> FoldPlan:
    """The K-fold table of ``cfg.split``: from ``splits_final.json`` when the data has one, else
    seeded and group-aware, stratified by ``strata`` (case id -> classes present; a callable is
    called only when needed) when ``cfg.split.stratify``."""
    if cfg.split.folds is None:
        raise ConfigError("data.split.folds is not set (no cross-validation requested)")
    final = find_nnunet_splits(root)
    if final is not None:
        return _nnunet_plan(final, ids, root, cfg)
    test, pool = _test_and_pool(ids, root, cfg)
    st = None
    if cfg.split.stratify and strata is not None:
        st = strata() if callable(strata) else strata
    folds = assign_folds(pool, cfg.split.folds, cfg.split.seed, st, group_key)
    source = "split files + seeded folds" if read_split_files(root) else "seeded folds"
    return FoldPlan(
        tuple(pool), tuple(map(tuple, folds)), tuple(test), source, cfg.split.seed, st is not None
    )


def _check_known(path: Path, listed: list[str], ids: list[str]) -> None:
    missing = sorted(set(listed) - set(ids))
    if missing:
        raise DataError(f"{path}: lists '{missing[0]}' but no such case exists ({len(missing)} missing ids)")


def saved_split_ids(path: Path, ids: list[str], cfg: DataConfig) -> SplitIds:
    """The split a run saved in ``splits.json`` (``data.split.file``), reused exactly: with
    ``cfg.split.folds``, fold ``cfg.split.fold`` of its cross-validation table (which must have
    ``folds`` folds), else its train/val/test ids."""
    doc = read_splits(path)
    table, test = doc["cross_validation"], doc["test"]
    _check_known(path, [i for f in table for i in f["train"] + f["val"]] + test, ids)
    if cfg.split.folds is None:
        _check_known(path, doc["train"] + doc["val"], ids)
        return SplitIds({k: doc[k] for k in ("train", "val", "test")}, f"saved ({path.name})")
    if not table:
        raise ConfigError(
            f"{path}: holds no cross-validation table, but data.split.folds is {cfg.split.folds}"
        )
    plan = plan_from_nnunet(table, test, str(path))
    if plan.k != cfg.split.folds:
        raise ConfigError(f"{path}: defines {plan.k} folds but data.split.folds is {cfg.split.folds}")
    plan = dataclasses.replace(
        plan,
        source=str(doc.get("source") or "saved"),
        seed=doc.get("seed") or 0,
        stratified=bool(doc["stratified"]),
    )
    return SplitIds(plan.split(cfg.split.fold), plan.source, plan)


def split_ids(ids: list[str], root: Path | None, cfg: DataConfig, strata: Strata | None = None) -> SplitIds:
    """train/val/test id lists: fold ``cfg.split.fold`` of a cross-validation when
    ``cfg.split.folds`` is set, else from split files when present, else a seeded group-aware
    split; ``cfg.split.file`` (a saved ``splits.json``) overrides all of these. ``strata`` (see
    :func:`fold_plan`) only matters for cross-validation."""
    if cfg.split.file is not None:
        out = saved_split_ids(Path(cfg.split.file).expanduser(), ids, cfg)
    elif cfg.split.folds is not None:
        plan = fold_plan(ids, root, cfg, strata)
        out = SplitIds(plan.split(cfg.split.fold), plan.source, plan)
    elif files := read_split_files(root):
        out = SplitIds(_splits_from_files(files, ids, root, cfg), "split files")
    else:
        rng = np.random.default_rng(cfg.split.seed)
        rest, test = _carve(list(ids), cfg.split.test_fraction, rng, True)
        frac = cfg.split.val_fraction / max(1e-9, 1.0 - cfg.split.test_fraction)
        train, val = _carve(rest, min(frac, 0.99), rng, True)
        out = SplitIds({"train": train, "val": val, "test": test}, "seeded")
    if not out["train"]:
        raise DataError(f"{root}: no training cases after splitting {len(ids)} cases")
    return out


def save_splits(path: str | Path, splits: Mapping[str, list[str]], cfg: DataConfig) -> Path:
    """Write a run's ``splits.json`` (:mod:`medseg.data.splits_io`) from :func:`split_ids`'s result."""
    plan = getattr(splits, "plan", None)
    return write_splits(
        path,
        splits,
        source=getattr(splits, "source", "unknown"),
        seed=cfg.split.seed,
        folds=plan.k if plan is not None else None,
        fold=cfg.split.fold if plan is not None else None,
        stratified=plan.stratified if plan is not None else False,
        cross_validation=plan.to_nnunet() if plan is not None else (),
    )
