"""K-fold cross-validation: seeded, group-aware, stratified fold assignment.

Every case lands in exactly one validation fold. Cases of one group (the slices of a volume,
the frames of a patient; see :func:`medseg.data.splits.group_key`) always share a fold, so a
patient never validates a model that trained on them. With *strata* (the classes each case
holds), groups are dealt out stratum by stratum so that every fold gets its share of, e.g.,
lesion-free images, as scikit-learn's ``StratifiedGroupKFold`` aims to and as nnU-Net's
five-fold cross-validation leaves to chance (Isensee et al., "nnU-Net", Nature Methods 2021).

Rule (:func:`assign_folds`): groups are sorted into strata by the union of the classes their
cases hold; strata are dealt rarest first; within a stratum the groups are shuffled (seeded)
and then taken largest first, each to the fold with the fewest groups of that stratum, ties to
the fold with the fewest cases, remaining ties in a seeded fold order. So each stratum's count
differs by at most one between folds and the fold sizes stay close.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medseg.constants import IGNORE_INDEX
from medseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medseg.data.case_store import CaseStore


def class_signature(mask: np.ndarray, ignore: int = IGNORE_INDEX) -> frozenset[int]:
    """The foreground classes a class-index mask holds (0 and ``ignore`` left out)."""
    values = np.unique(np.asarray(mask))
    return frozenset(int(v) for v in values if v != 0 and v != ignore)


def store_strata(store: CaseStore) -> dict[str, frozenset[int]]:
    """Case id -> :func:`class_signature` of its mask, for every case of a case store (decodes
    the cases not yet cached; cases without a mask get the empty signature). A store opened
    without its masks cannot rebuild stratified folds: that is an error, not other folds."""
    if not store.use_masks:
        raise ConfigError(
            "stratified cross-validation folds need the masks; open the cases with their masks "
            "or set data.split.stratify: false (in training too)"
        )
    out = {}
    for i, rec in enumerate(store.records):
        mask = store.get(i).mask
        out[rec.id] = frozenset() if mask is None else class_signature(mask)
    return out


def _groups(ids: Sequence[str], group_of: Callable[[str], str]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for i in ids:
        members.setdefault(group_of(i), []).append(i)
    return members


def _signatures(
    members: Mapping[str, list[str]], strata: Mapping[str, Collection[int]] | None
) -> dict[str, tuple[int, ...]]:
    if strata is None:
        return {g: () for g in members}
    out = {}
    for g, cases in members.items():
        missing = [c for c in cases if c not in strata]
        if missing:
            raise ValueError(f"no stratum given for case {missing[0]!r}")
        out[g] = tuple(sorted(set().union(*(set(strata[c]) for c in cases))))
    return out


def assign_folds(
    ids: Sequence[str],
    k: int,
    seed: int = 0,
    strata: Mapping[str, Collection[int]] | None = None,
    group_of: Callable[[str], str] = lambda i: i,
) -> list[list[str]]:
    """Cut ``ids`` into ``k`` validation folds (each a list in the order of ``ids``).

    ``strata``: case id -> the classes it holds (e.g. from :func:`class_signature`); None
    assigns groups without stratification. ``group_of``: case id -> group; a group is never
    split between folds. Raises :class:`DataError` when there are fewer groups than folds.
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    members = _groups(ids, group_of)
    if len(members) < k:
        raise DataError(
            f"{k} folds need at least {k} patients/volumes, but the {len(ids)} cases form only "
            f"{len(members)} group(s)"
        )
    signature = _signatures(members, strata)
    by_stratum: dict[tuple[int, ...], list[str]] = {}
    for g in sorted(members):
        by_stratum.setdefault(signature[g], []).append(g)
    rng = np.random.default_rng(seed)
    tie = rng.permutation(k)  # a seeded fold order for the remaining ties
    n_cases = [0] * k
    fold_of: dict[str, int] = {}
    for key in sorted(by_stratum, key=lambda s: (len(by_stratum[s]), s)):
        groups = list(by_stratum[key])
        rng.shuffle(groups)
        groups.sort(key=lambda g: -len(members[g]))  # stable: largest first, shuffled among equals
        taken = [0] * k
        for g in groups:
            f = min(range(k), key=lambda j: (taken[j], n_cases[j], tie[j]))
            fold_of[g] = f
            taken[f] += 1
            n_cases[f] += len(members[g])
    return [[i for i in ids if fold_of[group_of(i)] == f] for f in range(k)]


@dataclass(frozen=True)
class FoldPlan:
    """The cross-validation table of a dataset: the pool cut into folds, and the fixed test cases.

    ``folds[f]`` holds the validation ids of fold ``f``; training for fold ``f`` uses the rest of
    ``pool``. ``test`` never enters any fold.
    """

    pool: tuple[str, ...]
    folds: tuple[tuple[str, ...], ...]
    test: tuple[str, ...] = ()
    source: str = "seeded"
    seed: int = 0
    stratified: bool = False

    @property
    def k(self) -> int:
        return len(self.folds)

    def split(self, fold: int) -> dict[str, list[str]]:
        """``{"train", "val", "test"}`` ids of ``fold`` (0..k-1)."""
        if not 0 <= fold < self.k:
            raise ConfigError(f"fold {fold} does not exist: the cross-validation has folds 0..{self.k - 1}")
        val = set(self.folds[fold])
        return {
            "train": [i for i in self.pool if i not in val],
            "val": list(self.folds[fold]),
            "test": list(self.test),
        }

    def to_nnunet(self) -> list[dict[str, list[str]]]:
        """The folds in nnU-Net's ``splits_final.json`` form: ``[{"train": [...], "val": [...]}]``."""
        return [{"train": s["train"], "val": s["val"]} for s in map(self.split, range(self.k))]


def plan_from_nnunet(
    entries: Sequence[Mapping[str, Sequence[str]]],
    test: Sequence[str] = (),
    source: str = "splits_final.json",
) -> FoldPlan:
    """A :class:`FoldPlan` from nnU-Net's ``[{"train": [...], "val": [...]}]``, checked: no case
    is both training and validation in one fold, and no test case enters any fold."""
    folds: list[tuple[str, ...]] = []
    pool: dict[str, None] = {}
    test_set = set(test)
    for f, e in enumerate(entries):
        train, val = list(e["train"]), list(e["val"])
        both = set(train) & set(val)
        if both:
            raise DataError(f"{source}: fold {f} has {sorted(both)[0]!r} in both train and val")
        leak = (set(train) | set(val)) & test_set
        if leak:
            raise DataError(f"{source}: fold {f} uses test case {sorted(leak)[0]!r}")
        folds.append(tuple(val))
        pool.update(dict.fromkeys(train + val))
    if len(folds) < 2:
        raise DataError(f"{source}: needs at least 2 folds, has {len(folds)}")
    plan = FoldPlan(tuple(pool), tuple(folds), tuple(test), source)
    for f, e in enumerate(entries):
        if set(e["train"]) != set(plan.split(f)["train"]):
            raise DataError(
                f"{source}: fold {f} does not train on all the other folds' cases "
                "(medseg needs the folds to partition the cases, as nnU-Net writes them)"
            )
    return plan
