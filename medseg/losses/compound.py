"""Compound losses: Dice-CE / BCE-Dice, Combo, weighted sums, auxiliary head and deep supervision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.base import EPS, IGNORED, SegLoss, Target, class_weights_tensor, ground_truth
from medseg.losses.distribution import CrossEntropyLoss
from medseg.losses.region import DiceLoss
from medseg.losses.registry import LOSSES
from medseg.losses.stats import SigmoidCountsBCE, SoftmaxCountsCE, class_counts


@LOSSES.register(
    "dice_ce",
    paper="Dice (Milletari et al. 2016) + cross-entropy, as in nnU-Net (Isensee et al. 2021)",
    summary="ce_weight·CE + dice_weight·Dice (softmax CE; BCE in binary/multilabel mode)",
)
class DiceCELoss(SegLoss):
    """``ce_weight · CE + dice_weight · (1 - Dice)``; CE is softmax CE (multiclass) or BCE-with-logits.

    ``weights`` are class weights of the CE term only (see :class:`CrossEntropyLoss`); the Dice
    options are those of :class:`DiceLoss`. Both terms share one validated target.
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
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        self.ce = CrossEntropyLoss(
            mode=mode, from_logits=from_logits, ignore_index=ignore_index, weights=weights
        )
        self.dice = DiceLoss(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
            squared=squared,
        )
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target(logits, target)
        if self.from_logits and not self.dice.squared:
            if self.mode == "multiclass":
                return self._fused(logits, t)
            if self.ce.weights is None:
                return self._fused_sigmoid(logits, t)
        ce = self.ce.from_target(logits, t)
        return self.ce_weight * ce + self.dice_weight * self.dice.from_target(logits, t)

    def _fused_sigmoid(self, logits: Tensor, t: Target) -> Tensor:
        """One sigmoid for both terms (:class:`SigmoidCountsBCE`); same values as the two losses."""
        b, c = logits.shape[:2]
        v = None if t.valid is None else t.valid.reshape(b, c, -1)
        tp, sp, bce = SigmoidCountsBCE.apply(logits.reshape(b, c, -1), t.labels.reshape(b, c, -1), v)
        sg = t.labels.reshape(b, c, -1).sum(2)
        if not self.dice.per_image:
            tp, sp, sg = tp.sum(0), sp.sum(0), sg.sum(0)
        dice = self.dice.from_stats(tp, sp, sg, t)
        n = t.n_valid()
        bce = bce / (t.labels.numel() if n is None else n.clamp_min(EPS))
        return self.ce_weight * bce + self.dice_weight * dice

    def _fused(self, logits: Tensor, t: Target) -> Tensor:
        """One softmax for both terms (:class:`SoftmaxCountsCE`); same values as the two losses."""
        b, c = logits.shape[:2]
        v = None if t.valid is None else t.valid.reshape(b, -1)
        w = class_weights_tensor(self.ce.weights, c, logits.device, t.dtype)
        u = v
        if w is not None:
            wy = w[t.index].reshape(b, -1)
            u = wy if v is None else wy * v
        per_image = self.dice.per_image
        tp, sp, ce = SoftmaxCountsCE.apply(logits.reshape(b, c, -1), t.index.reshape(b, -1), v, u, per_image)
        sg = class_counts(t, b, c, per_image, t.dtype)
        dice = self.dice.from_stats(tp, sp if per_image else sp.sum(0), sg, t)
        ce = ce / (max(t.raw.numel(), 1) if u is None else u.sum().clamp_min(EPS))
        return self.ce_weight * ce + self.dice_weight * dice


@LOSSES.register(
    "bce_dice",
    paper="BCE + Dice (Milletari et al. 2016), e.g. BEFUnet's body loss",
    summary="bce_weight·BCE + dice_weight·Dice for binary/multilabel masks",
)
class BCEDiceLoss(DiceCELoss):
    """``bce_weight · BCE-with-logits + dice_weight · (1 - Dice)`` (binary / multilabel default).

    In multiclass mode the CE term is the softmax cross-entropy (then it equals ``dice_ce``).
    """

    def __init__(
        self,
        *,
        mode: str = "binary",
        from_logits: bool = True,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        per_image: bool = False,
        include_background: bool = True,
        weights: Sequence[float] | None = None,
        squared: bool = False,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
            weights=weights,
            squared=squared,
            ce_weight=bce_weight,
            dice_weight=dice_weight,
        )


@LOSSES.register(
    "combo",
    paper="Taghanaki et al. 2019, Combo loss, eq. 3",
    summary="α·wCE(β) + (1-α)·(1 - Dice), α = β = 0.5",
)
class ComboLoss(SegLoss):
    """Combo loss (Taghanaki et al. 2019, eq. 3), written so that it falls as predictions improve:

    ``L = α · wCE_β + (1 - α) · (1 - Dice)`` with
    ``wCE_β = -mean[β·g·log p + (1 - β)·(1 - g)·log(1 - p)]`` over valid pixels and channels
    (one-vs-rest on softmax probabilities in multiclass mode). ``β > 0.5`` penalises false
    negatives more than false positives. The paper subtracts the Dice coefficient; using
    ``1 - Dice`` only shifts the loss by the constant ``1 - α`` (same gradients, minimum 0).
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
        alpha: float = 0.5,
        beta: float = 0.5,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        if not (0 <= alpha <= 1 and 0 <= beta <= 1):
            raise ValueError(f"combo alpha and beta must lie in [0, 1]; got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.dice = DiceLoss(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            per_image=per_image,
            include_background=include_background,
        )

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.target(logits, target)
        return self.alpha * self.weighted_ce(logits, t) + (1.0 - self.alpha) * self.dice.from_target(
            logits, t
        )

    def weighted_ce(self, logits: Tensor, t: Target) -> Tensor:
        """``wCE_β``, the mean over valid pixels and channels."""
        beta = self.beta
        n = t.n_valid()
        tiny = torch.finfo(torch.float32).tiny
        if self.from_logits and self.mode == "multiclass":
            # Σ_c over a pixel = β·(-log p_y) + (1-β)·Σ_{c≠y} -log(1 - p_c), with few full-size temporaries
            c = logits.shape[1]
            log_p = logits.log_softmax(1)
            log_1mp = (-torch.expm1(log_p)).clamp_min(tiny).log()  # log(1 - p), accurate as p -> 1
            ii = IGNORED if t.ignore_index is None else t.ignore_index
            pos = F.nll_loss(log_p, t.raw, ignore_index=ii, reduction="sum")
            others = log_1mp.sum(1) - log_1mp.gather(1, t.index.unsqueeze(1)).squeeze(1)
            neg = -(others.sum() if t.valid is None else (others * t.valid[:, 0]).sum())
            pixels = t.raw.numel() if n is None else n.clamp_min(1.0)
            return (beta * pos + (1.0 - beta) * neg) / (pixels * c)
        if self.from_logits and beta < 1.0:
            # (1-β)·BCE with pos_weight β/(1-β) = -[β·g·log p + (1-β)·(1-g)·log(1-p)]
            pw = torch.tensor(beta / (1.0 - beta), dtype=logits.dtype, device=logits.device)
            total = F.binary_cross_entropy_with_logits(
                logits, t.labels, weight=t.valid, pos_weight=pw, reduction="sum"
            )
            return (1.0 - beta) * total / (t.labels.numel() if n is None else n.clamp_min(1.0))
        g = ground_truth(t, self.mode)
        if self.from_logits:
            log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
        else:
            log_p, log_1mp = logits.clamp_min(tiny).log(), (1.0 - logits).clamp_min(tiny).log()
        wce = -(beta * g * log_p + (1.0 - beta) * (1.0 - g) * log_1mp)
        if t.valid is None:
            return wce.mean()
        valid = t.valid.expand_as(wce)
        return (wce * valid).sum() / valid.sum().clamp_min(1.0)


def _route(module: nn.Module, aux: dict[str, Any] | None, extras: dict[str, Any]) -> dict[str, Any]:
    kw = {k: extras[k] for k in getattr(module, "needs", ()) if k in extras}
    if getattr(module, "uses_aux", False):
        kw["aux"] = aux
    return kw


class WeightedSum(nn.Module):
    """``Σ_i w_i · loss_i(logits, target)``; built from specs such as ``"dice:1+focal:0.5"``.

    ``needs`` is the union of the components' needs and ``uses_aux`` is true if any component
    uses the auxiliary outputs. After each call ``last_terms`` maps each component's name to its
    (detached, unweighted) value, for logging.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ValueError("a weighted sum needs at least one loss")
        self.names = [name for name, _, _ in terms]
        self.coefficients = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])
        needs: list[str] = []
        for m in self.terms:
            needs += [k for k in getattr(m, "needs", ()) if k not in needs]
        self.needs = tuple(needs)
        self.uses_aux = any(getattr(m, "uses_aux", False) for m in self.terms)
        self.last_terms: dict[str, Tensor] = {}

    def forward(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, **extras: Any
    ) -> Tensor:
        total = None
        self.last_terms = {}
        for name, w, m in zip(self.names, self.coefficients, self.terms):
            value = m(logits, target, **_route(m, aux, extras))
            self.last_terms[name] = value.detach()
            total = w * value if total is None else total + w * value
        return total

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}·{n}" for n, w in zip(self.names, self.coefficients))


def resize_logits(x: Tensor, size: Sequence[int]) -> Tensor:
    """Upsample logits ``[B, C, *s]`` to ``size`` (bilinear in 2D, trilinear in 3D, linear in 1D)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    if x.ndim - 2 not in modes:
        raise ValueError(f"cannot resize logits of shape {tuple(x.shape)}")
    return F.interpolate(x, size=tuple(size), mode=modes[x.ndim - 2], align_corners=False)


def _aux_entry(aux: dict[str, Any] | None, key: str, what: str) -> Any:
    if aux is None or key not in aux:
        have = "no aux dict" if aux is None else f"aux keys {sorted(aux)}"
        raise ConfigError(
            f"{what} needs aux['{key}'] from model.forward_aux(x), but got {have}; "
            "use a model with this auxiliary output or drop the wrapper"
        )
    return aux[key]


class AuxiliaryLoss(nn.Module):
    """Main loss plus a weighted auxiliary-head loss (PSPNet, Zhao et al. 2017, §3.4: weight 0.4).

    ``loss(logits, target) + aux_weight · loss(upsample(aux[key]), target)``; the auxiliary
    logits are upsampled to the target size.
    """

    uses_aux = True

    def __init__(self, loss: nn.Module, *, aux_weight: float = 0.4, key: str = "aux"):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0; got {aux_weight}")
        self.inner = loss
        self.aux_weight = float(aux_weight)
        self.key = key
        self.needs = tuple(getattr(loss, "needs", ()))

    def forward(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, **extras: Any
    ) -> Tensor:
        aux_logits = _aux_entry(aux, self.key, "the auxiliary-head loss")
        kw = _route(self.inner, aux, extras)
        main = self.inner(logits, target, **kw)
        side = self.inner(resize_logits(aux_logits, logits.shape[2:]), target, **kw)
        return main + self.aux_weight * side


def with_auxiliary(loss: nn.Module, *, aux_weight: float = 0.4, key: str = "aux") -> AuxiliaryLoss:
    """Wrap ``loss`` so that it also supervises the auxiliary head ``aux[key]`` with ``aux_weight``."""
    return AuxiliaryLoss(loss, aux_weight=aux_weight, key=key)


class DeepSupervision(nn.Module):
    """Deep supervision: the loss on the final logits and on each ``aux[key]`` level.

    ``aux[key]`` is a list of logits at decreasing resolution; level ``i`` (0 = final output)
    gets weight ``2^-i``, normalised to sum to 1 (as in nnU-Net, Isensee et al. 2021). Each
    level is upsampled to the target size.
    """

    uses_aux = True

    def __init__(self, loss: nn.Module, *, key: str = "deep"):
        super().__init__()
        self.inner = loss
        self.key = key
        self.needs = tuple(getattr(loss, "needs", ()))

    def forward(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, **extras: Any
    ) -> Tensor:
        levels = _aux_entry(aux, self.key, "deep supervision")
        if isinstance(levels, Tensor):
            levels = [levels]
        outputs = [logits, *levels]
        raw = [0.5**i for i in range(len(outputs))]
        norm = sum(raw)
        kw = _route(self.inner, aux, extras)
        total = None
        for w, out in zip(raw, outputs):
            value = (w / norm) * self.inner(resize_logits(out, logits.shape[2:]), target, **kw)
            total = value if total is None else total + value
        return total


__all__ = [
    "AuxiliaryLoss",
    "BCEDiceLoss",
    "ComboLoss",
    "DeepSupervision",
    "DiceCELoss",
    "WeightedSum",
    "resize_logits",
    "with_auxiliary",
]
