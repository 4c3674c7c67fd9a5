"""Region (overlap) losses: Dice, IoU/Jaccard, Tversky, Focal-Tversky.

All four compute soft counts per class over the valid pixels, ``TP = Σ p·g``, ``FP = Σ p·(1-g)``,
``FN = Σ (1-p)·g``, either over the whole batch (``per_image=False``, the default: one sum per
class, then the mean over classes) or per image (then the mean over images), with an explicit
additive smoothing ``smooth`` in numerator and denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medseg.losses.base import EPS, SegLoss, Target, reduce_classes
from medseg.losses.registry import LOSSES
from medseg.losses.stats import region_stats


class _RegionLoss(SegLoss):
    squared = False

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        per_image: bool = False,
        include_background: bool = True,
        weights: Sequence[float] | None = None,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0; got {smooth}")
        self.smooth = float(smooth)
        self.per_image = bool(per_image)
        self.include_background = bool(include_background)
        self.weights = None if weights is None else [float(w) for w in weights]

    def per_class(self, tp: Tensor, sp: Tensor, sg: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.from_target(logits, self.target(logits, target))

    def from_target(self, logits: Tensor, t: Target) -> Tensor:
        return self.from_stats(
            *region_stats(logits, t, self.mode, self.per_image, self.squared, self.from_logits), t
        )

    def from_stats(self, tp: Tensor, sp: Tensor, sg: Tensor, t: Target) -> Tensor:
        return reduce_classes(
            self.per_class(tp, sp, sg), t, self.mode, self.per_image, self.include_background, self.weights
        )


@LOSSES.register(
    "dice",
    paper="Milletari et al. 2016, V-Net, eq. 1",
    summary="1 - (2·Σpg + s)/(Σp + Σg + s) per class, mean over classes",
)
class DiceLoss(_RegionLoss):
    """Soft Dice loss (Milletari et al. 2016, eq. 1): ``1 - (2·TP + s) / (Σp + Σg + s)``.

    ``squared=True`` gives the V-Net form with ``Σp² + Σg²`` in the denominator.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        per_image: bool = False,
        include_background: bool = True,
        weights: Sequence[float] | None = None,
        squared: bool = False,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
            weights=weights,
        )
        self.squared = bool(squared)

    def per_class(self, tp: Tensor, sp: Tensor, sg: Tensor) -> Tensor:
        s = self.smooth
        return 1.0 - (2.0 * tp + s) / (sp + sg + s).clamp_min(EPS)


@LOSSES.register(
    "iou",
    aliases=("jaccard",),
    paper="Rahman & Wang 2016, Optimizing IoU in deep neural networks",
    summary="1 - (Σpg + s)/(Σp + Σg - Σpg + s), soft Jaccard",
)
class IoULoss(_RegionLoss):
    """Soft IoU / Jaccard loss (Rahman & Wang 2016): ``1 - (TP + s) / (Σp + Σg - TP + s)``."""

    def per_class(self, tp: Tensor, sp: Tensor, sg: Tensor) -> Tensor:
        s = self.smooth
        return 1.0 - (tp + s) / (sp + sg - tp + s).clamp_min(EPS)


def tversky_index(tp: Tensor, sp: Tensor, sg: Tensor, alpha: float, beta: float, smooth: float) -> Tensor:
    """``(TP + s) / (TP + α·FP + β·FN + s)`` with ``FP = Σp - TP`` and ``FN = Σg - TP``."""
    fp = sp - tp
    fn = sg - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(EPS)


class _TverskyBase(_RegionLoss):
    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        per_image: bool = False,
        include_background: bool = True,
        weights: Sequence[float] | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
            weights=weights,
        )
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0; got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)


@LOSSES.register(
    "tversky",
    paper="Salehi et al. 2017, Tversky loss, eq. 3",
    summary="1 - TP/(TP + α·FP + β·FN); α weighs false positives, β false negatives",
)
class TverskyLoss(_TverskyBase):
    """Tversky loss (Salehi et al. 2017, eq. 3): ``1 - (TP + s) / (TP + α·FP + β·FN + s)``.

    Here ``alpha`` weighs false positives and ``beta`` false negatives (as in Salehi et al.;
    Abraham & Khan swap the letters). ``α = β = 0.5`` is Dice, ``α = β = 1`` is IoU (with
    ``smooth=0``); ``β > α`` favours recall, useful for small lesions.
    """

    def per_class(self, tp: Tensor, sp: Tensor, sg: Tensor) -> Tensor:
        return 1.0 - tversky_index(tp, sp, sg, self.alpha, self.beta, self.smooth)


@LOSSES.register(
    "focal_tversky",
    paper="Abraham & Khan 2019, focal Tversky loss, eq. 4",
    summary="mean_c (1 - TI_c)^γ, γ = 0.75; α = 0.3 on FP, β = 0.7 on FN",
)
class FocalTverskyLoss(_TverskyBase):
    """Focal Tversky loss (Abraham & Khan 2019, eq. 4): ``mean_c (1 - TI_c)^γ``.

    The exponent is applied per class before averaging (not to the mean loss). ``gamma`` is
    the exponent itself (the paper writes ``1/γ`` with ``γ = 4/3``, hence the default 0.75).
    Defaults ``alpha=0.3`` (false positives), ``beta=0.7`` (false negatives): the paper's
    best setting, which favours recall.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        per_image: bool = False,
        include_background: bool = True,
        weights: Sequence[float] | None = None,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
            weights=weights,
            alpha=alpha,
            beta=beta,
        )
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0; got {gamma}")
        self.gamma = float(gamma)

    def per_class(self, tp: Tensor, sp: Tensor, sg: Tensor) -> Tensor:
        ti = tversky_index(tp, sp, sg, self.alpha, self.beta, self.smooth)
        # d/dx x^γ is infinite at 0 for γ < 1: a (near-)perfect class contributes 0 and no gradient
        x = 1.0 - ti
        return torch.where(x > EPS, x, torch.zeros_like(x)) ** self.gamma
