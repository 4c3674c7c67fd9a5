"""Lovász hinge (binary, on logits) and Lovász-softmax (on probabilities) (Berman et al. 2018).

Both minimise the Lovász extension of the Jaccard loss (Berman et al. 2018, eq. 8-9 and
Algorithm 1): per row (a class, or an image x class), sort the pixel errors in decreasing order
and take their dot product with the increments of the Jaccard loss along that order.
All rows are sorted in one batched call; ignored pixels get the smallest possible error, so
they sort last and contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.losses.base import SegLoss, Target, ground_truth
from medseg.losses.registry import LOSSES


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Increments of the Jaccard loss along sorted rows (Berman et al. 2018, Algorithm 1).

    ``gt_sorted``: ``[R, N]`` 0/1 ground truth, each row in decreasing order of the errors.
    With ``cs`` the running count of positives: ``J_i = 1 - (G - cs_i) / (G + i + 1 - cs_i)``;
    the result is ``J_0, J_1 - J_0, ...``. Computed in place (no autograd: it is a constant).
    """
    n = gt_sorted.shape[1]
    cs = gt_sorted.cumsum(1)
    total = cs[:, -1:].clone()
    union = torch.arange(1, n + 1, dtype=cs.dtype, device=cs.device).unsqueeze(0) + total
    union.sub_(cs)  # >= 1 everywhere: no division by zero
    ratio = cs.neg_().add_(total).div_(union)  # (G - cs) / union = 1 - J
    grad = torch.empty_like(ratio)
    torch.sub(ratio[:, :-1], ratio[:, 1:], out=grad[:, 1:])
    grad[:, 0] = 1.0 - ratio[:, 0]
    return grad


def _sortable_keys(errors: Tensor) -> np.ndarray:
    """int64 keys whose ascending order is the errors' *descending* order, each key's low 32 bits
    holding the element's column, so that a values-only sort yields the permutation."""
    bits = errors.detach().float().contiguous().numpy().view(np.int32)
    keys = bits.astype(np.int64)  # sign-extended IEEE-754 bits
    flip = np.right_shift(keys, 31)
    np.bitwise_and(flip, 0x7FFFFFFF, out=flip)
    np.bitwise_xor(keys, flip, out=keys)  # now ordered like the floats (negatives too)
    np.invert(keys, out=keys)  # descending
    np.left_shift(keys, 32, out=keys)
    np.bitwise_or(keys, np.arange(errors.shape[1], dtype=np.int64), out=keys)
    return keys


def sort_descending(errors: Tensor) -> Tensor:
    """Permutation sorting each row of ``errors`` ``[R, N]`` in decreasing order.

    On CPU the rows are sorted as packed int64 keys by numpy's SIMD sort (values only, in
    place), faster than ``torch.sort`` with its index output (profiled on the benchmark
    machine); elsewhere, and for float64 (whose order float32 keys could not resolve),
    ``torch.sort``.
    """
    if errors.device.type != "cpu" or errors.dtype != torch.float32 or errors.shape[1] >= 2**31:
        return torch.sort(errors.detach(), dim=1, descending=True)[1]
    keys = _sortable_keys(errors)
    keys.sort(axis=1)
    np.bitwise_and(keys, 0xFFFFFFFF, out=keys)
    return torch.from_numpy(keys)


def lovasz_rows(errors: Tensor, gt: Tensor, hinge: bool) -> Tensor:
    """Lovász extension value per row: ``Σ_i f(e_(i)) · ΔJ_i`` with errors sorted decreasingly.

    ``errors``, ``gt``: ``[R, N]``. ``hinge``: apply ReLU to the errors. The increments ``ΔJ`` are
    constants of the sort (Berman et al.'s subgradient); they are scattered back to the pixels'
    own positions, so the value is ``Σ_x f(e_x)·w_x`` and autograd sees one product.
    """
    if errors.shape[1] == 0:
        return errors.sum(1) * 0.0
    with torch.no_grad():
        perm = sort_descending(errors)
        increments = lovasz_grad(gt.gather(1, perm).to(errors.dtype))
        weights = torch.empty_like(increments).scatter_(1, perm, increments)
    e = F.relu(errors) if hinge else errors
    return (e * weights).sum(1)


def _mean_over(values: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean that is 0 (and still differentiable) when all weights are 0."""
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


@LOSSES.register(
    "lovasz_hinge",
    paper="Berman et al. 2018, Lovász-Softmax, eq. 10 (hinge on logits)",
    summary="Lovász extension of the Jaccard loss on hinge errors 1 - z·(2g-1); per image",
)
class LovaszHingeLoss(SegLoss):
    """Lovász hinge loss (Berman et al. 2018, §3.1): errors ``1 - z·(2g - 1)`` on logits ``z``.

    Binary (one channel) or multilabel (each channel a binary problem). ``per_image=True``
    (default): one Lovász term per image (and channel), averaged over the images that have
    valid pixels; ``False``: one term over the whole batch.
    """

    def __init__(
        self,
        *,
        mode: str = "binary",
        from_logits: bool = True,
        ignore_index: int | None = None,
        per_image: bool = True,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        if mode == "multiclass":
            raise ValueError("lovasz_hinge is a binary loss (binary or multilabel mode); use lovasz_softmax")
        if not from_logits:
            raise ValueError(
                "lovasz_hinge works on logits (from_logits=True); use lovasz_softmax for probabilities"
            )
        self.per_image = bool(per_image)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target(logits, target)
        g = t.labels
        errors = 1.0 - logits * (2.0 * g - 1.0)
        if t.valid is not None:
            errors = errors.masked_fill(t.valid == 0, float("-inf"))
        b, c = logits.shape[:2]
        if self.per_image:
            rows = lovasz_rows(errors.reshape(b * c, -1), g.reshape(b * c, -1), hinge=True)
            if t.valid is None:
                return rows.mean()
            has = (t.valid.expand_as(g).reshape(b * c, -1).sum(1) > 0).float()
            return _mean_over(rows, has)
        e = errors.transpose(0, 1).reshape(c, -1)
        rows = lovasz_rows(e, g.transpose(0, 1).reshape(c, -1), hinge=True)
        if t.valid is None:
            return rows.mean()
        has = (t.valid.expand_as(g).transpose(0, 1).reshape(c, -1).sum(1) > 0).float()
        return _mean_over(rows, has)


def _class_rows(probs: Tensor, t: Target, mode: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Probabilities, 0/1 ground truth and validity as ``[B, R, S]`` rows of classes."""
    if mode == "multiclass":
        return probs, ground_truth(t, mode), t.valid  # one-hot, zero at ignored pixels
    if mode == "binary":  # two classes: background (1 - p) and foreground p
        probs = torch.cat([1.0 - probs, probs], 1)
        g = torch.cat([1.0 - t.labels, t.labels], 1)
        if t.valid is not None:
            g = g * t.valid
        return probs, g, t.valid
    return probs, t.labels, t.valid


@LOSSES.register(
    "lovasz_softmax",
    paper="Berman et al. 2018, Lovász-Softmax, eq. 12 and Algorithm 1",
    summary="Lovász extension of the Jaccard loss on |g - p| per class; classes present in the target",
)
class LovaszSoftmaxLoss(SegLoss):
    """Lovász-softmax loss (Berman et al. 2018, eq. 12): errors ``|g_c - p_c|`` per class.

    ``classes``: ``"present"`` (default; classes that occur in the target), ``"all"``, or a
    list of class indices. ``per_image=False`` (default): one term per class over the batch.
    Binary mode uses the two classes (background ``1-p``, foreground ``p``); multilabel mode
    treats each sigmoid channel as a class.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        per_image: bool = False,
        classes: str | Sequence[int] = "present",
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        if isinstance(classes, str):
            if classes not in ("present", "all"):
                raise ValueError(
                    f"classes must be 'present', 'all' or a list of class indices; got {classes!r}"
                )
        else:
            classes = [int(c) for c in classes]
            if not classes:
                raise ValueError("classes must not be an empty list")
        self.classes = classes
        self.per_image = bool(per_image)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target(logits, target)
        probs, g, valid = _class_rows(self.probabilities(logits), t, self.mode)
        if isinstance(self.classes, list):
            n = probs.shape[1]
            bad = [c for c in self.classes if not 0 <= c < n]
            if bad:
                raise ValueError(f"lovasz_softmax classes {bad} out of range for {n} classes")
            idx = torch.tensor(self.classes, device=probs.device)
            probs, g = probs.index_select(1, idx), g.index_select(1, idx)
            if valid is not None and valid.shape[1] > 1:
                valid = valid.index_select(1, idx)
        errors = (g - probs).abs()
        if valid is not None:
            errors = errors * valid  # ignored pixels: error 0, sorted after every error > 0
        b, r = errors.shape[:2]
        if self.per_image:
            rows = lovasz_rows(errors.reshape(b * r, -1), g.reshape(b * r, -1), hinge=False).view(b, r)
            weight = self._row_weights(g.flatten(2).sum(2), valid, b, r)
            per_img = (rows * weight).sum(1) / weight.sum(1).clamp_min(1.0)
            return _mean_over(per_img, (weight.sum(1) > 0).float())
        e = errors.transpose(0, 1).reshape(r, -1)
        gg = g.transpose(0, 1).reshape(r, -1)
        rows = lovasz_rows(e, gg, hinge=False)
        weight = self._row_weights(gg.sum(1), valid, None, r)
        return _mean_over(rows, weight)

    def _row_weights(self, gts: Tensor, valid: Tensor | None, b: int | None, r: int) -> Tensor:
        if self.classes == "present":
            return (gts > 0).float()
        if valid is None:
            return torch.ones_like(gts)
        if b is None:  # a row counts when it has a valid pixel
            counts = valid.expand(valid.shape[0], r, *valid.shape[2:]).transpose(0, 1).reshape(r, -1).sum(1)
        else:
            counts = valid.expand(b, r, *valid.shape[2:]).flatten(2).sum(2)
        return (counts > 0).float()
