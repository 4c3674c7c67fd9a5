"""Empty-mask policy: what a metric returns when the prediction and/or the target is empty.

Three policies (see docs/metrics.md for the full table):

``"nan"`` (default)
    both empty -> overlap scores 1, distances 0, NSD 1;
    exactly one empty -> Dice/IoU/NSD 0, distances ``nan`` (excluded from means, counted in reports).
``"max"`` (or ``"max:<value>"``, or a float, or ``EmptyPolicy("max", value)``)
    as ``"nan"`` but a one-sided empty case gets the distance ``max_distance``; when no value is
    given, the diagonal of the image's physical extent, ``sqrt(sum((shape_i * spacing_i)^2))``.
``"legacy"``
    the rule of the TransUNet evaluation script (Chen et al. 2021, ``calculate_metric_percase``),
    inherited by Swin-UNet, MISSFormer, BEFUnet...: prediction present and target empty -> Dice 1,
    distances 0; prediction empty (target empty or not) -> Dice 0, distances 0. It inflates scores
    (a false-positive organ scores a perfect Dice, a missed organ scores a perfect HD95) and exists
    only so published numbers can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

EmptyMode = Literal["nan", "max", "legacy"]
_MODES = ("nan", "max", "legacy")


@dataclass(frozen=True)
class EmptyPolicy:
    """How metrics treat empty masks. ``max_distance`` is used by mode ``"max"`` only (None: diagonal)."""

    mode: EmptyMode = "nan"
    max_distance: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"empty policy must be one of {_MODES}, got {self.mode!r}")
        if self.max_distance is not None:
            if self.mode != "max":
                raise ValueError("max_distance is only used by the 'max' empty policy")
            if not (np.isfinite(self.max_distance) and self.max_distance >= 0):
                raise ValueError(f"max_distance must be finite and >= 0, got {self.max_distance}")

    def missing_distance(self, shape: tuple[int, ...], spacing: np.ndarray) -> float:
        """The distance reported when exactly one of the two masks is empty."""
        if self.mode == "legacy":
            return 0.0
        if self.mode == "max":
            if self.max_distance is not None:
                return float(self.max_distance)
            return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * spacing) ** 2)))
        return float("nan")

    def describe(self) -> str:
        if self.mode == "max" and self.max_distance is not None:
            return f"max:{self.max_distance:g}"
        return self.mode


def resolve_empty(empty: str | float | EmptyPolicy | None) -> EmptyPolicy:
    """Accept ``"nan"``, ``"max"``, ``"max:373.5"``, ``"legacy"``, a number (= max with that value),
    an :class:`EmptyPolicy` or None (= ``"nan"``)."""
    if empty is None:
        return EmptyPolicy()
    if isinstance(empty, EmptyPolicy):
        return empty
    if isinstance(empty, bool):
        raise ValueError(f"empty policy must be a name or a number, got {empty!r}")
    if isinstance(empty, int | float):
        return EmptyPolicy("max", float(empty))
    if isinstance(empty, str):
        name, _, value = empty.strip().lower().partition(":")
        if name not in _MODES:
            raise ValueError(
                f"unknown empty policy {empty!r}; choose one of 'nan', 'max', 'max:<mm>', 'legacy'"
            )
        if value:
            if name != "max":
                raise ValueError(f"empty policy {empty!r}: only 'max' takes a value")
            try:
                return EmptyPolicy("max", float(value))
            except ValueError:
                raise ValueError(f"empty policy {empty!r}: {value!r} is not a number") from None
        return EmptyPolicy(name)  # type: ignore[arg-type]
    raise ValueError(f"empty policy must be a name, a number or an EmptyPolicy, got {type(empty).__name__}")
