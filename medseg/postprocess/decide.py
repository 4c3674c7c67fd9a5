"""Deciding post-processing on out-of-fold predictions: a step is kept only when it helps.

The rule follows nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021, and nnU-Net v2's
``determine_postprocessing``), run on (prediction, reference) pairs of the cross-validation:

1. **All foreground as one, largest component.** Kept when the mean over foreground classes of
   the per-class mean Dice strictly increases *and* no class's mean Dice decreases.
2. **Per class, largest component** (only with two or more foreground classes), class by class
   in index order, each tried on the result of the steps kept so far: kept when that class's
   mean Dice strictly increases (the other classes cannot change).
3. **Per class, small components removed** (medseg's addition; nnU-Net v2 stops at 2), for the
   classes that still may have several components: each candidate size is tried and the best is
   kept when the class's mean Dice strictly increases. Default candidates: 10, 25, 50 and 100 %
   of the smallest connected component of that class in any reference, so a threshold never
   exceeds the smallest real structure seen.

Dice per case and class is ``2 TP / (2 TP + FP + FN)``, 1 when both masks are empty (medseg's
default empty-case policy, so removing a false positive from an empty case counts as a gain);
reference voxels equal to ``ignore_index`` are left out. "Mean Dice" of a class is its mean over
the cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.constants import IGNORE_INDEX
from medseg.postprocess.components import component_sizes
from medseg.postprocess.plan import PostprocessPlan, Step

Pair = tuple[np.ndarray, np.ndarray]
SIZE_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def class_dice(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> np.ndarray:
    """Dice of classes 1..K-1 for one case (both empty -> 1)."""
    p, r = np.asarray(pred).astype(np.int64).ravel(), np.asarray(ref).astype(np.int64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"prediction and reference differ in size: {np.shape(pred)} vs {np.shape(ref)}")
    if ignore_index is not None:
        keep = r != ignore_index
        p, r = p[keep], r[keep]
    k = int(num_classes)
    for name, a in (("prediction", p), ("reference", r)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{name} holds class {int(a.max())}, outside 0..{k - 1} (num_classes={k})")
    cm = np.bincount(r * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    den = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)[1:]


def _mean_dice(
    preds: Sequence[np.ndarray], refs: Sequence[np.ndarray], k: int, ignore: int | None
) -> np.ndarray:
    """Per-class mean Dice over the cases, shape (K-1,)."""
    return np.mean([class_dice(p, r, k, ignore) for p, r in zip(preds, refs)], axis=0)


def _record(step: Step, before: np.ndarray, after: np.ndarray, kept: bool) -> dict:
    return {
        "step": step.kind,
        "classes": list(step.classes),
        "min_size": step.min_size,
        "dice_before": [float(v) for v in before],
        "dice_after": [float(v) for v in after],
        "mean_before": float(before.mean()),
        "mean_after": float(after.mean()),
        "kept": bool(kept),
    }


def _smallest_reference_component(refs: Sequence[np.ndarray], c: int, connectivity: int | None) -> int | None:
    smallest = None
    for r in refs:
        _, sizes = component_sizes(np.asarray(r) == c, connectivity)
        if sizes.size:
            smallest = int(sizes.min()) if smallest is None else min(smallest, int(sizes.min()))
    return smallest


def _size_candidates(
    refs: Sequence[np.ndarray], c: int, connectivity: int | None, given: Sequence[int] | None
) -> list[int]:
    if given is not None:
        return sorted({int(s) for s in given if int(s) >= 2})
    smallest = _smallest_reference_component(refs, c, connectivity)
    if smallest is None:
        return []
    return sorted({max(2, int(round(smallest * f))) for f in SIZE_FRACTIONS})


class _Search:
    """The current predictions and their per-class mean Dice while steps are tried."""

    def __init__(self, pairs: Sequence[Pair], k: int, connectivity: int | None, ignore: int | None):
        self.preds = [np.asarray(p) for p, _ in pairs]
        self.refs = [np.asarray(r) for _, r in pairs]
        self.k, self.connectivity, self.ignore = k, connectivity, ignore
        self.dice = _mean_dice(self.preds, self.refs, k, ignore)

    def trial(self, step: Step) -> tuple[list[np.ndarray], np.ndarray]:
        preds = [step.apply(p, self.connectivity) for p in self.preds]
        return preds, _mean_dice(preds, self.refs, self.k, self.ignore)

    def accept(self, preds: list[np.ndarray], dice: np.ndarray) -> None:
        self.preds, self.dice = preds, dice


def decide_postprocessing(
    pairs: Sequence[Pair],
    num_classes: int,
    *,
    connectivity: int | None = None,
    min_sizes: Sequence[int] | None = None,
    remove_small: bool = True,
    ignore_index: int | None = IGNORE_INDEX,
) -> PostprocessPlan:
    """The :class:`PostprocessPlan` the rule above keeps on ``pairs`` of (prediction, reference)
    label maps (2D or 3D, out-of-fold predictions of the whole cross-validation).

    ``min_sizes``: candidate sizes (voxels) for step 3 instead of the default; ``remove_small``:
    False skips step 3 (nnU-Net v2's rule exactly). The plan's ``decision`` lists every step tried.
    """
    if not pairs:
        raise ValueError("no (prediction, reference) pairs to decide post-processing on")
    k = max(int(num_classes), 2)
    s = _Search(pairs, k, connectivity, ignore_index)
    fg = tuple(range(1, k))
    plan = PostprocessPlan(connectivity=connectivity)

    def consider(step: Step, better) -> bool:
        preds, dice = s.trial(step)
        kept = bool(better(s.dice, dice))
        plan.decision.append(_record(step, s.dice, dice, kept))
        if kept:
            s.accept(preds, dice)
            plan.steps.append(step)
        return kept

    fg_kept = consider(
        Step("largest_foreground", fg), lambda old, new: new.mean() > old.mean() and np.all(new >= old)
    )
    single = set(fg) if fg_kept and len(fg) == 1 else set()  # one component left: nothing more to do
    if len(fg) > 1:
        for c in fg:
            if consider(Step("largest_class", (c,)), lambda old, new, i=c - 1: new[i] > old[i]):
                single.add(c)
    if remove_small:
        for c in (c for c in fg if c not in single):
            _try_small_sizes(s, plan, c, _size_candidates(s.refs, c, connectivity, min_sizes))
    return plan


def _try_small_sizes(s: _Search, plan: PostprocessPlan, c: int, sizes: list[int]) -> None:
    """Step 3 for class ``c``: the best candidate size, kept if it raises the class's mean Dice."""
    best: tuple[Step, list[np.ndarray], np.ndarray] | None = None
    for size in sizes:
        step = Step("remove_small", (c,), size)
        preds, dice = s.trial(step)
        plan.decision.append(_record(step, s.dice, dice, False))
        if dice[c - 1] > s.dice[c - 1] and (best is None or dice[c - 1] > best[2][c - 1]):
            best = (step, preds, dice)
    if best is not None:
        for rec in plan.decision:
            if (
                rec["step"] == "remove_small"
                and rec["classes"] == [c]
                and rec["min_size"] == best[0].min_size
            ):
                rec["kept"] = True
        s.accept(best[1], best[2])
        plan.steps.append(best[0])
