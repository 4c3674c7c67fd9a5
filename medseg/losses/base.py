"""Shared machinery of the loss zoo: input checks, float32 under autocast, targets, ignore masks.

Every loss is a :class:`SegLoss`: ``loss(logits, target, **extras)`` with logits ``[B, C, *S]``
(``S`` = one or more spatial dimensions) and

- ``mode="binary"``: ``C == 1`` (sigmoid), target ``[B, *S]`` or ``[B, 1, *S]`` with values in {0, 1}
  (floats in [0, 1] are accepted as soft labels);
- ``mode="multiclass"``: ``C >= 2`` (softmax), target integer class indices ``[B, *S]`` (or ``[B, 1, *S]``);
- ``mode="multilabel"``: ``C >= 1`` independent sigmoids, target ``[B, C, *S]`` in {0, 1}.

Pixels whose target equals ``ignore_index`` are removed from every sum (numerators and
denominators). Losses compute in float32 even inside a float16/bfloat16 autocast region.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

MODES = ("binary", "multiclass", "multilabel")
IGNORED = -100  # ignore value handed to F.cross_entropy when no ignore_index is set (never a label)
EPS = 1e-7  # guards denominators only; smoothing is the explicit ``smooth`` option


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"loss mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def check_ignore_index(ignore_index: Any) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index must be an int or None; got {ignore_index!r}")
    return int(ignore_index)


class SegLoss(nn.Module):
    """Base class: validates inputs and runs :meth:`loss` in float32 with autocast disabled.

    Class attributes read by the trainer: ``needs`` (extra batch keys passed as keyword
    arguments, e.g. ``"weight_map"``) and ``uses_aux`` (whether ``aux=`` from ``forward_aux``
    is consumed).
    """

    needs: tuple[str, ...] = ()
    uses_aux: bool = False

    def __init__(
        self, *, mode: str = "multiclass", from_logits: bool = True, ignore_index: int | None = None
    ):
        super().__init__()
        self.mode = check_mode(mode)
        self.from_logits = bool(from_logits)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: Tensor, target: Tensor, **extras: Any) -> Tensor:
        check_logits(logits, self.mode)
        # float32 (float64 is kept, for gradcheck) even under a float16/bfloat16 autocast
        x = logits if logits.dtype == torch.float64 else logits.float()
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss(x, target, **extras)

    def loss(self, logits: Tensor, target: Tensor, **extras: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, from_logits={self.from_logits}, ignore_index={self.ignore_index}"

    # helpers shared by the subclasses
    def target(self, logits: Tensor, target: Tensor) -> Target:
        return prepare_target(logits, target, self.mode, self.ignore_index)

    def probabilities(self, logits: Tensor) -> Tensor:
        if not self.from_logits:
            return logits
        return logits.softmax(1) if self.mode == "multiclass" else logits.sigmoid()


class Target:
    """A validated target and the views of it that the losses use (each computed at most once).

    ``raw``: the target as given (multiclass: long ``[B, *S]``; binary/multilabel: ``[B, C, *S]``).
    ``ignore_index``: the configured ignore value (None: every entry counts).
    ``keep``: bool mask shaped like ``raw`` of the entries that count (None without ignore_index).
    ``values``: ``raw`` with ignored entries replaced by 0 (a valid class index / a negative).
    """

    def __init__(
        self,
        raw: Tensor,
        ignore_index: int | None,
        num_classes: int,
        mode: str,
        dtype: torch.dtype,
        keep: Tensor | None,
        values: Tensor,
    ):
        self.raw = raw
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.mode = mode
        self.dtype = dtype  # float dtype of the computation (float64 only for gradcheck)
        self.keep = keep
        self.values = values
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def ignored(self) -> Tensor | None:
        """Bool mask shaped like ``raw`` of the ignored entries (None: no ignore_index)."""
        return None if self.keep is None else self._cached("ignored", self.keep.logical_not)

    @property
    def valid(self) -> Tensor | None:
        """Float mask of the entries that count: ``[B, 1, *S]`` multiclass, ``[B, C, *S]`` otherwise."""
        if self.keep is None:
            return None

        def make() -> Tensor:
            return (self.keep.unsqueeze(1) if self.mode == "multiclass" else self.keep).to(self.dtype)

        return self._cached("valid", make)

    @property
    def labels(self) -> Tensor:
        """Binary/multilabel: float ground truth ``[B, C, *S]``, 0 at ignored entries.
        Multiclass: class indices with ignored pixels set to 0 (same as :attr:`index`)."""
        if self.mode == "multiclass":
            return self.values
        return self._cached("labels", lambda: self.values.to(self.dtype))

    @property
    def index(self) -> Tensor:
        """Multiclass: a class index valid for ``gather`` at every pixel (ignored pixels -> 0)."""
        return self.values

    def n_valid(self) -> Tensor | None:
        """Number of valid pixels (entries in binary/multilabel mode) as a 0-d float tensor."""
        if self.keep is None:
            return None
        return self._cached("n_valid", lambda: self.keep.sum().to(self.dtype))

    def any_valid(self) -> Tensor | None:
        """A 0-d float tensor, 1 if at least one pixel counts, else 0 (None: no ignore_index)."""
        n = self.n_valid()
        return None if n is None else (n > 0).to(self.dtype)


def check_logits(logits: Tensor, mode: str) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"loss expects a torch.Tensor of logits; got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor; got {logits.dtype}")
    if logits.ndim < 3:
        raise ValueError(
            f"logits must be [B, C, *spatial] (at least 3 dims); got shape {tuple(logits.shape)}"
        )
    if mode == "binary" and logits.shape[1] != 1:
        raise ValueError(
            f"binary mode expects logits [B, 1, *spatial]; got {tuple(logits.shape)} "
            "(use mode='multiclass' for C >= 2 softmax classes)"
        )
    if mode == "multiclass" and logits.shape[1] < 2:
        raise ValueError(
            f"multiclass mode expects logits [B, C>=2, *spatial]; got {tuple(logits.shape)} "
            "(use mode='binary' for a single sigmoid channel)"
        )


def _squeeze_channel(target: Tensor, logits: Tensor, mode: str) -> Tensor:
    spatial = tuple(logits.shape[2:])
    b = logits.shape[0]
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if tuple(target.shape) != (b, *spatial):
        raise ValueError(
            f"{mode} target must be [B, *spatial] = {(b, *spatial)} (or with a channel of 1); "
            f"got {tuple(target.shape)} for logits {tuple(logits.shape)}"
        )
    return target


def _extremes(x: Tensor) -> tuple[float, float]:
    if x.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.aminmax(x)
    return tuple(torch.stack([lo, hi]).tolist())  # one device sync for both


def prepare_target(logits: Tensor, target: Tensor, mode: str, ignore_index: int | None) -> Target:
    """Validate ``target`` against ``logits`` (shape, dtype, values) and wrap it in a :class:`Target`.

    Costs a few passes over the target: ``keep = target != ignore_index``, the target with ignored
    entries zeroed, and one min/max reduction over it (one device sync).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    c = logits.shape[1]
    dtype = logits.dtype
    if mode == "multiclass":
        if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"multiclass target must hold integer class indices; got dtype {target.dtype}")
        target = _squeeze_channel(target, logits, mode).long()
        top = c - 1
    else:
        if target.is_complex():
            raise TypeError(f"{mode} target must be real; got {target.dtype}")
        if mode == "binary":
            target = _squeeze_channel(target, logits, mode).unsqueeze(1)
        elif tuple(target.shape) != tuple(logits.shape):
            raise ValueError(
                f"multilabel target must have the logits' shape {tuple(logits.shape)}; got {tuple(target.shape)}"
            )
        if target.dtype == torch.bool:
            return Target(target, None, c, mode, dtype, None, target)
        top = 1
    keep = None
    values = target
    if mode != "multiclass" and target.dtype != dtype:
        values = target.to(dtype)  # binary/multilabel work on float values; converting first halves the bytes
    if ignore_index is not None:
        keep = values != ignore_index
        if values is target:
            values = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
        else:  # a fresh float copy: zero the ignored entries in place
            values.mul_(keep)
    lo, hi = _extremes(values)
    if lo < 0 or hi > top:
        bad = lo if lo < 0 else hi
        if mode == "multiclass":
            hint = "" if ignore_index is not None else " (set ignore_index for pixels to skip)"
            raise ValueError(
                f"target holds label {int(bad)}, outside [0, {c - 1}] for {c} classes "
                f"(ignore_index={ignore_index}){hint}"
            )
        raise ValueError(
            f"{mode} target values must lie in [0, 1] (or equal ignore_index={ignore_index}); found {bad:g}"
        )
    return Target(target, ignore_index, c, mode, dtype, keep, values)


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[B, *S]`` long -> ``[B, K, *S]``; ``IGNORED`` (or any out-of-range) labels give all zeros."""
    shape = (1, num_classes) + (1,) * (labels.ndim - 1)
    classes = torch.arange(num_classes, device=labels.device).view(shape)
    return (labels.unsqueeze(1) == classes).to(dtype)


def ground_truth(t: Target, mode: str) -> Tensor:
    """Per-class ground truth ``[B, C, *S]``, zero at ignored pixels."""
    if mode != "multiclass":
        return t.labels
    ii = t.ignore_index
    if ii is None or not 0 <= ii < t.num_classes:
        return one_hot(t.raw, t.num_classes, t.dtype)  # an out-of-range ignore value gives a zero row
    return one_hot(t.values, t.num_classes, t.dtype) * t.valid


def class_weights_tensor(
    weights: Any, num: int, device: torch.device, dtype: torch.dtype = torch.float32, what: str = "weights"
) -> Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=dtype, device=device).flatten()
    if w.numel() != num:
        raise ValueError(f"{what} has {w.numel()} entries but {num} are needed (one per class/channel)")
    if bool((w < 0).any()):
        raise ValueError(f"{what} must be non-negative; got {w.tolist()}")
    return w


def reduce_classes(
    per_class: Tensor,
    t: Target,
    mode: str,
    per_image: bool,
    include_background: bool = True,
    weights: Any = None,
) -> Tensor:
    """Mean over classes (optionally weighted, optionally without class 0), then over images.

    ``per_class`` is ``[C]`` or ``[B, C]``. Images without any valid pixel are left out of the
    mean; when nothing is valid the result is 0 (still attached to the graph).
    """
    if mode == "multiclass" and not include_background:
        per_class = per_class[..., 1:]
        offset = 1
    else:
        offset = 0
    c = per_class.shape[-1]
    w = class_weights_tensor(weights, t.num_classes, per_class.device, per_class.dtype)
    if w is not None:
        w = w[offset:]
        loss = (per_class * w).sum(-1) / w.sum().clamp_min(EPS)
    else:
        loss = per_class.sum(-1) / max(c, 1)
    if per_image:
        if t.valid is None:
            return loss.mean()
        has = (t.valid.flatten(1).sum(1) > 0).float()
        return (loss * has).sum() / has.sum().clamp_min(1.0)
    any_valid = t.any_valid()
    return loss if any_valid is None else loss * any_valid
