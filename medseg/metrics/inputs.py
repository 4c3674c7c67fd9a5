"""Input checking shared by the metric functions: arrays or tensors in, validated numpy out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def to_numpy(x: Any, name: str = "array") -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU.

    torch is not imported here: a tensor is recognised by its ``detach`` and ``cpu`` methods.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a numeric array")
    return a


def as_binary(x: Any, name: str) -> np.ndarray:
    """A boolean mask from a bool array or a {0, 1} array; anything else is an error (threshold first)."""
    a = to_numpy(x, name)
    if a.dtype == np.bool_:
        return a
    if a.size and np.any((a != 0) & (a != 1)):
        bad = a[(a != 0) & (a != 1)].flat[0]
        raise ValueError(
            f"{name}: a binary mask must hold only 0 and 1 (or bool), found {bad!r}; "
            "threshold probabilities or compare a label map with its class index first"
        )
    return a != 0


def check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    if pred.ndim == 0:
        raise ValueError("pred and target must have at least one dimension")


def as_labels(x: Any, name: str) -> np.ndarray:
    """An integer label map; float arrays are accepted only when every value is a whole number."""
    a = to_numpy(x, name)
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return a
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.all(np.isfinite(a) & (a == np.round(a))):
            raise ValueError(f"{name}: a label map must hold whole class indices, got non-integer values")
        return a.astype(np.int64)
    raise ValueError(f"{name}: a label map must be an integer array, got dtype {a.dtype}")


def as_spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray:
    """Voxel spacing per array axis (same axis order as the array), float64; None means 1 everywhere."""
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    s = np.atleast_1d(np.asarray(to_numpy(spacing, "spacing"), dtype=np.float64))
    if s.ndim != 1:
        raise ValueError(f"spacing must be a number or a sequence of {ndim} numbers, got shape {s.shape}")
    if s.size == 1 and ndim != 1:
        s = np.repeat(s, ndim)
    if s.size != ndim:
        raise ValueError(f"spacing has {s.size} values but the masks have {ndim} dimensions")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"spacing values must be finite and positive, got {s.tolist()}")
    return s
