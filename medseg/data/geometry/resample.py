"""Resampling to a target voxel spacing, following nnU-Net's rules (Isensee et al., Nature Methods 2021).

* Shape: ``new_shape = round(shape * old_spacing / new_spacing)`` per axis.
* Grid: voxel centres are aligned (a voxel is a cell, not a point): output voxel ``o`` of an axis
  of ``n_in -> n_out`` voxels samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5``.
* Images: cubic B-spline (order 3; ``order`` selects 1 for linear). Probabilities: linear.
  Labels: ``"nearest"`` (exact index arithmetic) or ``"linear"`` (each class's one-hot map
  interpolated linearly, then the arg-max; nnU-Net's order-1 segmentation resampling).
* Anisotropy: when the old or the new spacing of a 3D volume has ``max / min > 3`` and one axis
  alone holds the largest spacing, that low-resolution axis is resampled with nearest neighbour
  (order 0) and the other two in-plane, slice by slice, with the chosen order, so that no
  interpolation smears across thick slices.

Arrays carry their spatial axes first (as many as spacings) and optional trailing channel axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

ANISOTROPY_RATIO = 3.0  # nnU-Net's ANISO_THRESHOLD


def resampled_shape(
    shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple:
    """``round(shape * old_spacing / new_spacing)`` per axis (at least 1 voxel)."""
    s = np.asarray(shape, float) * np.asarray(old_spacing, float) / np.asarray(new_spacing, float)
    return tuple(max(1, int(v)) for v in np.round(s))


def _single_lowres_axis(spacing: Sequence[float]) -> int | None:
    s = np.asarray(spacing, dtype=float)
    if s.size != 3 or s.max() / s.min() <= ANISOTROPY_RATIO:
        return None
    top = np.flatnonzero(np.isclose(s, s.max()))
    return int(top[0]) if top.size == 1 else None


def lowres_axis(old_spacing: Sequence[float], new_spacing: Sequence[float]) -> int | None:
    """The axis resampled with nearest neighbour, or None (resample all axes alike).

    nnU-Net's rule: the old spacing decides when it is anisotropic, else the new one.
    """
    old = _single_lowres_axis(old_spacing)
    return old if old is not None else _single_lowres_axis(new_spacing)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input voxel nearest to each output voxel centre along one axis (centres aligned)."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _nearest(array: np.ndarray, out_shape: Sequence[int], axes: Sequence[int]) -> np.ndarray:
    out = array
    for ax in axes:
        if out.shape[ax] != out_shape[ax]:
            out = np.take(out, nearest_indices(out.shape[ax], out_shape[ax]), axis=ax)
    return out


def _zoom(x: np.ndarray, out_shape: Sequence[int], order: int) -> np.ndarray:
    """Spline resampling of one float array to exactly ``out_shape`` (centres aligned)."""
    if tuple(x.shape) == tuple(out_shape):
        return x
    factors = np.asarray(out_shape, float) / np.asarray(x.shape, float)
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if tuple(out.shape) != tuple(out_shape):  # zoom rounds the shape itself; never expected to differ
        raise AssertionError(f"zoom gave {out.shape}, expected {tuple(out_shape)}")
    return out


def _resample_channel(x: np.ndarray, out_shape: Sequence[int], order: int, axis: int | None) -> np.ndarray:
    """One spatial float array: spline everywhere, or in-plane spline + nearest along ``axis``."""
    if order == 0:
        return _nearest(x, out_shape, range(x.ndim))
    if axis is None:
        return _zoom(x, out_shape, order)
    plane = [s for a, s in enumerate(out_shape) if a != axis]
    moved = np.moveaxis(x, axis, 0)
    slices = np.stack([_zoom(moved[k], plane, order) for k in range(moved.shape[0])])
    slices = np.moveaxis(slices, 0, axis)
    return _nearest(slices, out_shape, [axis])


def _target(
    shape: Sequence[int], old: Sequence[float], new: Sequence[float], out_shape: Sequence[int] | None
) -> tuple[tuple[int, ...], int | None]:
    n = len(old)
    if len(new) != n or len(shape) < n:
        raise ValueError(f"spacings {tuple(old)} / {tuple(new)} do not fit an array of shape {tuple(shape)}")
    target = tuple(out_shape) if out_shape is not None else resampled_shape(shape[:n], old, new)
    return target, lowres_axis(old, new)


def resample_image(
    image: np.ndarray,
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    *,
    order: int = 3,
    out_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Resample an image (or probabilities with ``order=1``) to ``new_spacing``; float32 out.

    ``out_shape`` forces the spatial output shape (used by the exact inverse of a resampling).
    """
    target, axis = _target(image.shape, old_spacing, new_spacing, out_shape)
    n = len(target)
    x = np.asarray(image, dtype=np.float32)
    channels = int(np.prod(x.shape[n:], dtype=np.int64))
    flat = x.reshape((*x.shape[:n], channels))
    out = np.empty((*target, channels), np.float32)
    for c in range(channels):
        out[..., c] = _resample_channel(flat[..., c], target, order, axis)
    return out.reshape((*target, *x.shape[n:]))


def resample_labels(
    labels: np.ndarray,
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    *,
    mode: str = "linear",
    out_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Resample an integer label map; ``mode`` "nearest" or "linear" (one-hot, linear, arg-max).

    The dtype is kept; ties of the linear mode go to the lower class.
    """
    if mode not in ("nearest", "linear"):
        raise ValueError(f"label resampling mode must be 'nearest' or 'linear', got {mode!r}")
    target, axis = _target(labels.shape, old_spacing, new_spacing, out_shape)
    if mode == "nearest":
        return _nearest(labels, target, range(len(target)))
    best = np.full(target, -1.0, np.float32)
    out = np.zeros(target, labels.dtype)
    for c in np.unique(labels):
        score = _resample_channel((labels == c).astype(np.float32), target, 1, axis)
        better = score > best
        out[better], best[better] = c, score[better]
    return out
