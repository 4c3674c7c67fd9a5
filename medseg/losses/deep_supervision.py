"""Deep supervision with downsampled targets, as nnU-Net trains (Isensee et al., Nature Methods
2021; deeply-supervised nets: Lee et al., AISTATS 2015).

A model built with deep-supervision heads (e.g. ``unet`` with ``deep_supervision: true``) returns
``forward_aux(x) -> (logits, {"deep_supervision": [1/2, 1/4, ... scale logits]})``. The base loss
is applied at every scale against the target *downsampled* to that scale (nearest neighbour,
which keeps class indices and ``ignore_index`` exact; or max-pooling for binary / multilabel
masks, which keeps thin structures), and the terms are summed with weights ``decay**i``
(``i = 0`` for the full-resolution output), the lowest-resolution weight set to 0 as nnU-Net
does, then normalised to sum to 1.

Config::

    loss: {name: deep_supervision, options: {base: dice_ce}}

This differs from :class:`medseg.losses.compound.DeepSupervision`, which upsamples the logits
of ``aux["deep"]`` to the target size and keeps every level.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import MedsegNote
from medseg.losses.registry import LOSSES

TARGET_MODES = ("nearest", "max")


def deep_supervision_weights(
    n: int, *, decay: float = 0.5, drop_lowest: bool = True, weights: Sequence[float] | None = None
) -> list[float]:
    """Normalised weights of ``n`` outputs, highest resolution first.

    Default: ``decay**i``, the lowest resolution dropped (weight 0) when ``n > 1``, normalised to
    sum to 1 (nnU-Net: 1, 1/2, 1/4, ..., 0). Explicit ``weights`` are used for the first ``n``
    outputs (missing ones count 0) and normalised.
    """
    if n < 1:
        raise ValueError("deep supervision needs at least one output")
    if weights is not None:
        raw = [float(w) for w in weights[:n]] + [0.0] * max(0, n - len(weights))
    else:
        if not 0 < decay <= 1:
            raise ValueError(f"deep supervision decay must lie in (0, 1]; got {decay}")
        raw = [decay**i for i in range(n)]
        if drop_lowest and n > 1:
            raw[-1] = 0.0
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise ValueError(f"deep supervision weights must be >= 0 with a positive sum; got {raw}")
    total = sum(raw)
    return [w / total for w in raw]


def downsample_target(
    target: Tensor, size: Sequence[int], *, mode: str = "nearest", ignore_index: int | None = None
) -> Tensor:
    """``target`` (``[B, *S]`` or ``[B, C, *S]``) at spatial ``size``, same dtype and layout.

    ``nearest``: PyTorch's ``nearest-exact`` sampling (source index ``floor((i + 0.5) * in / out)``),
    valid for class indices and the ignore value. ``max``: max-pooling by an integer factor over
    the entries that are not ``ignore_index``; a window with no such entry stays ignored (binary
    and multilabel masks only).
    """
    size = tuple(int(s) for s in size)
    t = target.unsqueeze(1) if target.ndim == len(size) + 1 else target
    if t.ndim != len(size) + 2:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit spatial size {size}")
    if tuple(t.shape[2:]) == size:
        return target
    if mode == "nearest":
        out = F.interpolate(t.float(), size=size, mode="nearest-exact")
    elif mode == "max":
        out = _max_pool_valid(t.float(), size, ignore_index)
    else:
        raise ValueError(f"target_downsample must be one of {', '.join(TARGET_MODES)}; got {mode!r}")
    out = out.to(target.dtype)
    return out.squeeze(1) if target.ndim == len(size) + 1 else out


def _max_pool_valid(t: Tensor, size: tuple[int, ...], ignore_index: int | None) -> Tensor:
    factors = [a // b for a, b in zip(t.shape[2:], size)]
    if any(f * b != a for f, a, b in zip(factors, t.shape[2:], size)):
        raise ValueError(f"max-pooling needs integer factors; cannot take {tuple(t.shape[2:])} to {size}")
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(size)]
    if ignore_index is None:
        return pool(t, factors)
    keep = t != ignore_index
    pooled = pool(t.masked_fill(~keep, float("-inf")), factors)
    any_kept = pool(keep.float(), factors) > 0
    return torch.where(any_kept, pooled, torch.full_like(pooled, float(ignore_index)))


class DeepSupervisionLoss(nn.Module):
    """``Σ_i w_i · loss(out_i, downsample(target, size(out_i)))`` over ``[logits] + aux[key]``.

    Extra inputs the base loss needs (e.g. a weight map) are downsampled with the target
    (nearest). With a model that returns no deep-supervision outputs (another architecture
    swapped into a preset) it is the base loss on the full-resolution output, with one warning.
    """

    uses_aux = True

    def __init__(
        self,
        loss: nn.Module,
        *,
        decay: float = 0.5,
        drop_lowest: bool = True,
        weights: Sequence[float] | None = None,
        target_downsample: str = "nearest",
        ignore_index: int | None = None,
        key: str = "deep_supervision",
    ) -> None:
        super().__init__()
        if target_downsample not in TARGET_MODES:
            raise ValueError(f"target_downsample must be one of {', '.join(TARGET_MODES)}")
        if target_downsample == "max" and getattr(loss, "mode", None) == "multiclass":
            raise ValueError("target_downsample 'max' is for binary/multilabel masks; use 'nearest'")
        deep_supervision_weights(2, decay=decay, drop_lowest=drop_lowest, weights=weights)  # validate early
        self.inner = loss
        self.decay, self.drop_lowest = float(decay), bool(drop_lowest)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.target_downsample = target_downsample
        self.ignore_index = ignore_index
        self.key = key
        self.needs = tuple(getattr(loss, "needs", ()))
        self._warned = False

    def level_weights(self, n: int) -> list[float]:
        return deep_supervision_weights(
            n, decay=self.decay, drop_lowest=self.drop_lowest, weights=self.weights
        )

    def forward(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, **extras: Any
    ) -> Tensor:
        levels = [] if aux is None else aux.get(self.key, [])
        if aux is None or self.key not in aux:
            self._warn_once(aux)
        outputs = [logits, *([levels] if isinstance(levels, Tensor) else levels)]
        total: Tensor | None = None
        for w, out in zip(self.level_weights(len(outputs)), outputs):
            size = out.shape[2:]
            t = downsample_target(target, size, mode=self.target_downsample, ignore_index=self.ignore_index)
            kw = {k: _resize_extra(v, target, size) for k, v in extras.items() if k in self.needs}
            value = w * self.inner(out, t, **kw)  # weight-0 levels stay in the graph (DDP-safe)
            total = value if total is None else total + value
        assert total is not None  # outputs always holds the full-resolution logits
        return total

    def _warn_once(self, aux: dict[str, Any] | None) -> None:
        if self._warned:
            return
        self._warned = True
        have = "no aux dict" if aux is None else f"aux keys {sorted(aux)}"
        warnings.warn(
            f"deep_supervision loss: the model gave no aux['{self.key}'] ({have}); only the full-resolution "
            "output is supervised (unet: set model.options.deep_supervision: true)",
            MedsegNote,
            stacklevel=2,
        )

    def extra_repr(self) -> str:
        return f"key={self.key!r}, decay={self.decay}, drop_lowest={self.drop_lowest}, target={self.target_downsample}"


def _resize_extra(value: Any, target: Tensor, size: Sequence[int]) -> Any:
    if isinstance(value, Tensor) and value.shape[-len(size) :] == target.shape[-len(size) :]:
        return downsample_target(value, size, mode="nearest")
    return value


@LOSSES.register(
    "deep_supervision",
    paper="Isensee et al., nnU-Net, Nature Methods 2021; Lee et al., deeply-supervised nets, AISTATS 2015",
    summary="base loss (option 'base', default dice_ce) at every decoder scale, targets downsampled, "
    "weights 1, 1/2, 1/4 ... (lowest 0) normalised",
)
def build_deep_supervision(
    *,
    mode: str = "multiclass",
    base: str = "dice_ce",
    decay: float = 0.5,
    drop_lowest: bool = True,
    weights: Sequence[float] | None = None,
    target_downsample: str = "nearest",
    key: str = "deep_supervision",
    ignore_index: int | None = None,
    **options: Any,
) -> DeepSupervisionLoss:
    """The ``deep_supervision`` loss: ``options`` other than the wrapper's go to the ``base`` loss spec."""
    from medseg.losses.spec import build_loss  # the spec module imports the registry's users

    inner = build_loss(base, mode=mode, ignore_index=ignore_index, **options)
    return DeepSupervisionLoss(
        inner,
        decay=decay,
        drop_lowest=drop_lowest,
        weights=weights,
        target_downsample=target_downsample,
        ignore_index=ignore_index,
        key=key,
    )


__all__ = ["DeepSupervisionLoss", "build_deep_supervision", "deep_supervision_weights", "downsample_target"]
