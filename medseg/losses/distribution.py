"""Distribution (per-pixel) losses: cross-entropy / BCE, Focal, U-Net boundary-weighted CE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.errors import ConfigError
from medseg.losses.base import EPS, IGNORED, SegLoss, Target, class_weights_tensor
from medseg.losses.fused import SigmoidFocal, SoftmaxFocal
from medseg.losses.registry import LOSSES

_TINY = torch.finfo(torch.float32).tiny


def pixel_ce(logits: Tensor, t: Target, mode: str, from_logits: bool) -> Tensor:
    """Per-pixel (multiclass: ``[B, *S]``) or per-element (binary/multilabel: ``[B, C, *S]``) CE.

    Ignored pixels give 0 (multiclass: ``F.cross_entropy`` skips ``IGNORED`` labels; the caller
    multiplies binary/multilabel values by ``t.valid``).
    """
    if mode == "multiclass":
        ii = IGNORED if t.ignore_index is None else t.ignore_index
        if from_logits:
            return F.cross_entropy(logits, t.raw, ignore_index=ii, reduction="none")
        return F.nll_loss(logits.clamp_min(_TINY).log(), t.raw, ignore_index=ii, reduction="none")
    if from_logits:
        return F.binary_cross_entropy_with_logits(logits, t.labels, reduction="none")
    return F.binary_cross_entropy(logits, t.labels, reduction="none")


def pixel_weights(t: Target, mode: str, weights: Tensor | None) -> Tensor | None:
    """Per-pixel class weights (times the valid mask), shaped like :func:`pixel_ce`'s output."""
    if mode == "multiclass":
        if weights is None:
            return None
        w = weights[t.index]
        return w if t.valid is None else w * t.valid[:, 0]
    w = t.valid
    if weights is not None:
        if mode == "binary":  # weights = (background, foreground)
            cw = weights[0] + (weights[1] - weights[0]) * t.labels
        else:  # one weight per channel
            cw = weights.view(1, -1, *([1] * (t.labels.ndim - 2))).expand_as(t.labels)
        w = cw if w is None else cw * w
    return w


def _n_weights(mode: str, num_classes: int) -> int:
    return 2 if mode == "binary" else num_classes


@LOSSES.register(
    "ce",
    aliases=("bce",),
    paper="cross-entropy; BCE-with-logits in binary/multilabel mode",
    summary="softmax cross-entropy (multiclass) or BCE-with-logits (binary/multilabel)",
)
class CrossEntropyLoss(SegLoss):
    """Cross-entropy: softmax CE (multiclass) or BCE-with-logits (binary / multilabel).

    ``weights``: per-class weights (multiclass: K values; binary: (background, foreground);
    multilabel: one per channel). The mean is weighted: ``Σ w·CE / Σ w`` over valid pixels,
    as in ``torch.nn.functional.cross_entropy``.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        weights: Sequence[float] | None = None,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        self.weights = None if weights is None else [float(w) for w in weights]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.from_target(logits, self.target(logits, target))

    def from_target(self, logits: Tensor, t: Target) -> Tensor:
        w = class_weights_tensor(self.weights, _n_weights(self.mode, t.num_classes), logits.device, t.dtype)
        if self.mode == "multiclass" and self.from_logits:
            # fused kernel; sum / count so that an all-ignored batch gives 0, not nan
            ii = IGNORED if t.ignore_index is None else t.ignore_index
            total = F.cross_entropy(logits, t.raw, weight=w, ignore_index=ii, reduction="sum")
            if w is None and t.ignore_index is None:
                return total / max(t.raw.numel(), 1)
            pw = pixel_weights(t, self.mode, w)
            denom = t.n_valid() if pw is None else pw.sum()
            return total / denom.clamp_min(EPS)
        pw = pixel_weights(t, self.mode, w)
        if self.mode != "multiclass" and self.from_logits:  # fused weighting, no per-pixel temporary
            if pw is None:
                return F.binary_cross_entropy_with_logits(logits, t.labels)
            total = F.binary_cross_entropy_with_logits(logits, t.labels, weight=pw, reduction="sum")
            return total / (t.n_valid() if w is None else pw.sum()).clamp_min(EPS)
        ce = pixel_ce(logits, t, self.mode, self.from_logits)
        if pw is None:
            return ce.mean()
        return (ce * pw).sum() / pw.sum().clamp_min(EPS)


@LOSSES.register(
    "focal",
    paper="Lin et al. 2017, Focal loss, eq. 5",
    summary="-α_t (1-p_t)^γ log p_t per pixel, mean over pixels; γ = 2",
)
class FocalLoss(SegLoss):
    """Focal loss (Lin et al. 2017, eq. 5): ``FL = -α_t · (1 - p_t)^γ · log(p_t)``.

    The modulation is applied per pixel, then the mean over valid pixels (elements in
    multilabel mode) is taken. ``alpha``: binary/multilabel -> a float, the weight of positives
    (negatives get ``1 - α``); multiclass -> one weight per class. ``alpha=None``: no weighting.
    With ``gamma=0`` this is the (α-weighted) cross-entropy averaged over pixels.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        alpha: float | Sequence[float] | None = None,
        gamma: float = 2.0,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0; got {gamma}")
        if alpha is not None:
            if mode == "multiclass" and isinstance(alpha, (int, float)):
                raise ValueError("multiclass focal alpha must be a list of per-class weights (or None)")
            if mode != "multiclass":
                if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
                    raise ValueError(f"{mode} focal alpha must be a float in [0, 1] (or None); got {alpha!r}")
                alpha = float(alpha)
            else:
                alpha = [float(a) for a in alpha]
        self.alpha = alpha
        self.gamma = float(gamma)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target(logits, target)
        b, c = logits.shape[:2]
        if self.mode == "multiclass":
            w = t.valid[:, 0] if t.valid is not None else None
            if self.alpha is not None:
                a = class_weights_tensor(self.alpha, c, logits.device, t.dtype, "focal alpha")[t.index]
                w = a if w is None else a * w
            if self.from_logits:
                w3 = None if w is None else w.reshape(b, -1)
                total = SoftmaxFocal.apply(logits.reshape(b, c, -1), t.index.reshape(b, -1), w3, self.gamma)
            else:
                total = self._generic(pixel_ce(logits, t, self.mode, False), w)
            n = t.n_valid()
            return total / (t.raw.numel() if n is None else n.clamp_min(1.0))
        w = t.valid
        if self.alpha is not None:
            a = (1.0 - self.alpha) + (
                2.0 * self.alpha - 1.0
            ) * t.labels  # α for positives, 1 - α for negatives
            w = a if w is None else a * w
        if self.from_logits:
            total = SigmoidFocal.apply(logits, t.labels, w, self.gamma)
        else:
            total = self._generic(pixel_ce(logits, t, self.mode, False), w, probs=logits, y=t.labels)
        n = t.n_valid()
        return total / (t.labels.numel() if n is None else n.clamp_min(1.0))

    def _generic(
        self, ce: Tensor, w: Tensor | None, probs: Tensor | None = None, y: Tensor | None = None
    ) -> Tensor:
        """Autograd form for probability inputs (``from_logits=False``)."""
        if probs is None:
            one_minus_pt = -torch.expm1(-ce)  # multiclass: p_t = exp(-CE)
        else:
            one_minus_pt = probs + y - 2.0 * probs * y
        if self.gamma > 0:
            # x^γ has an infinite slope at 0 for γ < 1: keep that point out of the graph
            safe = torch.where(one_minus_pt > 0, one_minus_pt, torch.zeros_like(one_minus_pt))
            ce = safe**self.gamma * ce
        return ce.sum() if w is None else (ce * w).sum()


@LOSSES.register(
    "unet_weighted_ce",
    paper="Ronneberger et al. 2015, U-Net, eq. 1-2",
    summary="CE weighted by w(x) = w_c(x) + w0·exp(-(d1+d2)²/2σ²) from batch['weight_map']",
    needs=("weight_map",),
)
class UNetWeightedCELoss(SegLoss):
    """U-Net boundary-weighted cross-entropy (Ronneberger et al. 2015, eq. 1 and 2).

    ``Σ_x w(x)·CE(x) / N_valid`` with the weight map of eq. 2 computed in the data pipeline by
    :func:`medseg.data.edges.unet_weight_map` and passed as ``weight_map`` ``[B, *S]``.
    """

    needs = ("weight_map",)

    def __init__(
        self, *, mode: str = "multiclass", from_logits: bool = True, ignore_index: int | None = None
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)

    def loss(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        if weight_map is None:
            raise ConfigError(
                "loss 'unet_weighted_ce' needs batch['weight_map'] (U-Net weight maps computed by "
                "medseg.data.edges.unet_weight_map in the data pipeline); the batch has none"
            )
        t = self.target(logits, target)
        spatial = tuple(logits.shape[2:])
        b = logits.shape[0]
        if weight_map.ndim == logits.ndim and weight_map.shape[1] == 1:
            weight_map = weight_map[:, 0]
        if tuple(weight_map.shape) != (b, *spatial):
            raise ValueError(
                f"weight_map must be [B, *spatial] = {(b, *spatial)}; got {tuple(weight_map.shape)}"
            )
        wm = weight_map.to(device=logits.device, dtype=torch.float32)
        ce = pixel_ce(logits, t, self.mode, self.from_logits)
        if self.mode != "multiclass":
            wm = wm.unsqueeze(1)
        total = (ce * wm if t.valid is None or self.mode == "multiclass" else ce * wm * t.valid).sum()
        if t.valid is None:
            return total / max(ce.numel(), 1)
        return total / t.n_valid().clamp_min(1.0)
