"""Per-case evaluation of label maps: every overlap and surface metric for every class.

One confusion matrix per case (a single pass over the voxels) gives the overlap metrics of all
classes; the surface metrics of each class are computed on the bounding box of that class in the
prediction and the target (found for all classes in one pass by ``scipy.ndimage.find_objects``).

Volume protocol (Synapse multi-organ, ACDC; Chen et al. 2021 TransUNet, sec. 4.1): a model that
predicts 2D slices is evaluated per 3D volume — stack the slice predictions along axis 0 and call
:func:`evaluate_volume` with the volume's spacing (slice thickness first), not per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.metrics.empty import EmptyPolicy, resolve_empty
from medseg.metrics.inputs import as_binary, as_labels, as_spacing, check_pair, to_numpy
from medseg.metrics.overlap import OVERLAP_METRICS, confusion_matrix, counts_from_matrix, overlap_from_counts
from medseg.metrics.surface import (
    SURFACE_METRICS,
    ASSDCombine,
    HDCombine,
    Method,
    SurfaceDistances,
    distances_cropped,
    metrics_from_distances,
    union_box,
)

METRICS = OVERLAP_METRICS + SURFACE_METRICS
# larger is better for these; smaller is better for the distances
HIGHER_IS_BETTER = {m: m not in ("hd", "hd95", "assd") for m in METRICS}


def evaluate_case(
    pred_labels: Any,
    target_labels: Any,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    include_background: bool = False,
    *,
    roi: Any | None = None,
    ignore_index: int | None = None,
    empty: str | float | EmptyPolicy | None = "nan",
    nsd_tolerance: float = 1.0,
    hd_combine: HDCombine = "max",
    assd_combine: ASSDCombine = "pooled",
    surface: bool = True,
    method: Method = "auto",
) -> dict[int, dict[str, Any]]:
    """All metrics of one case, per class.

    Args:
        pred_labels, target_labels: integer label maps of the same shape (2D or 3D, numpy or torch).
        num_classes: number of classes including background (a binary task is 2; 1 is read as 2).
        spacing: voxel size per array axis (e.g. ``(z, y, x)`` mm for a ``[D, H, W]`` volume).
        include_background: also report class 0.
        roi: boolean mask; voxels outside it are ignored (e.g. the DRIVE field of view). For the
            surface metrics both masks are cut to the ROI.
        ignore_index: target value to ignore like voxels outside the ROI (the pipeline uses
            :data:`medseg.constants.IGNORE_INDEX`, 255).
        empty: empty-mask policy, ``"nan"`` (default), ``"max"``, ``"max:<mm>"``, a number or ``"legacy"``.
        nsd_tolerance: NSD tolerance τ in spacing units (mm with spacing, pixels without).
        hd_combine, assd_combine: see :mod:`medseg.metrics.surface`.
        surface: False skips the surface metrics (they are then ``nan``), e.g. for fast validation.

    Returns:
        ``{class_index: {"dice", "iou", "sensitivity", "specificity", "precision", "accuracy",
        "hd", "hd95", "assd", "nsd": float, "empty_target", "empty_pred": bool,
        "tp", "fp", "fn", "tn": int}}``.
    """
    policy = resolve_empty(empty)
    k, p, t, s = _checked_inputs(pred_labels, target_labels, num_classes, spacing)
    valid = _valid_mask(p, t, roi, ignore_index)
    cm = _confusion(p, t, valid, k)
    classes = range(0 if include_background else 1, k)
    if surface:
        options = dict(
            tolerance=nsd_tolerance, hd_combine=hd_combine, assd_combine=assd_combine, empty=policy
        )
        surf = _surface_metrics(p, t, valid, cm, k, classes, s, method, options)
    out: dict[int, dict[str, Any]] = {}
    for c in classes:
        tp, fp, fn, tn = counts_from_matrix(cm, c)
        rec: dict[str, Any] = overlap_from_counts(tp, fp, fn, tn, policy)
        rec.update(surf[c] if surface else {m: float("nan") for m in SURFACE_METRICS})
        rec.update(empty_target=(tp + fn) == 0, empty_pred=(tp + fp) == 0, tp=tp, fp=fp, fn=fn, tn=tn)
        out[c] = rec
    return out


def _surface_metrics(
    p: np.ndarray,
    t: np.ndarray,
    valid: np.ndarray | None,
    cm: np.ndarray,
    k: int,
    classes: range,
    s: Any,
    method: Method,
    options: dict[str, Any],
) -> dict[int, dict[str, Any]]:
    """The surface metrics of each class, each computed on the bounding box of that class in
    the prediction and the target; both masks are first cut to the valid voxels (outside
    counts as background). ``options`` go to :func:`metrics_from_distances`."""
    if valid is not None:
        p = np.where(valid, p, 0)
        t = np.where(valid, t, 0)
    boxes_p = ndimage.find_objects(p, max_label=k - 1)
    boxes_t = ndimage.find_objects(t, max_label=k - 1)
    full = tuple(slice(0, n) for n in p.shape)
    out: dict[int, dict[str, Any]] = {}
    for c in classes:
        if c == 0:
            tp, fp, fn, _ = counts_from_matrix(cm, c)
            box = full if (tp + fp + fn) else None
        else:
            box = union_box(boxes_p[c - 1], boxes_t[c - 1])
        out[c] = metrics_from_distances(_class_distances(p, t, valid, c, box, s, method), **options)
    return out


def _checked_inputs(
    pred_labels: Any, target_labels: Any, num_classes: int, spacing: float | Sequence[float] | None
) -> tuple[int, np.ndarray, np.ndarray, Any]:
    """The class count (at least 2), both label maps as numpy (same shape) and the spacing."""
    k = int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    k = max(k, 2)
    p, t = as_labels(pred_labels, "pred_labels"), as_labels(target_labels, "target_labels")
    check_pair(p, t)
    return k, p, t, as_spacing(spacing, p.ndim)


def _valid_mask(p: np.ndarray, t: np.ndarray, roi: Any | None, ignore_index: int | None) -> np.ndarray | None:
    """The voxels that count: inside ``roi`` and not ``ignore_index`` in the target (None: all)."""
    valid: np.ndarray | None = None
    if roi is not None:
        valid = as_binary(roi, "roi")
        check_pair(p, valid)
    if ignore_index is not None:
        keep = t != ignore_index
        valid = keep if valid is None else valid & keep
    return valid


def _confusion(p: np.ndarray, t: np.ndarray, valid: np.ndarray | None, k: int) -> np.ndarray:
    """The k x k confusion matrix over the valid voxels; a label outside ``0..k-1`` is an error."""
    pv, tv = (p, t) if valid is None else (p[valid], t[valid])
    for name, arr in (("pred_labels", pv), ("target_labels", tv)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            bad = arr.min() if arr.min() < 0 else arr.max()
            raise ValueError(f"{name} holds class {bad}, outside 0..{k - 1} (num_classes={k})")
    return confusion_matrix(pv, tv, k)


def _class_distances(
    p: np.ndarray,
    t: np.ndarray,
    valid: np.ndarray | None,
    c: int,
    box: tuple[slice, ...] | None,
    s: Any,
    method: Method,
) -> SurfaceDistances:
    """Surface distances of class ``c`` both ways, computed inside ``box`` (None: both masks
    empty). Background (class 0) is cut to the valid voxels."""
    if box is None:
        d_pt, d_tp = np.zeros(0), np.zeros(0)
    else:
        pc, tc = p[box] == c, t[box] == c
        if valid is not None and c == 0:
            pc &= valid[box]
            tc &= valid[box]
        d_pt, d_tp = distances_cropped(pc, tc, s, method)
    return SurfaceDistances(d_pt, d_tp, p.shape, s)


def stack_slices(slices: Sequence[Any] | Any) -> np.ndarray:
    """Stack 2D slice label maps [H, W] along a new axis 0 into one volume [D, H, W]."""
    if isinstance(slices, list | tuple):
        arrs = [to_numpy(x, "slice") for x in slices]
        if not arrs:
            raise ValueError("no slices to stack")
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1 or arrs[0].ndim != 2:
            raise ValueError(f"slices must all be 2D with the same shape, got {sorted(shapes)}")
        return np.stack(arrs, axis=0)
    vol = to_numpy(slices, "slices")
    if vol.ndim != 3:
        raise ValueError(f"a stacked volume must be 3D [D, H, W], got shape {vol.shape}")
    return vol


def evaluate_volume(
    pred_slices: Sequence[Any] | Any,
    target_slices: Sequence[Any] | Any,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    include_background: bool = False,
    **kwargs: Any,
) -> dict[int, dict[str, Any]]:
    """The Synapse/ACDC volume protocol: stack slice-wise 2D predictions and evaluate per 3D volume.

    ``spacing`` is ``(slice_thickness, row_spacing, col_spacing)`` in mm. Other keyword
    arguments go to :func:`evaluate_case` (``empty="legacy"`` and ``hd_combine="pooled"``
    reproduce the TransUNet script's numbers, which it computes without spacing).
    """
    return evaluate_case(
        stack_slices(pred_slices),
        stack_slices(target_slices),
        num_classes,
        spacing,
        include_background,
        **kwargs,
    )


def metric_names() -> tuple[str, ...]:
    return METRICS


__all__ = ["METRICS", "HIGHER_IS_BETTER", "evaluate_case", "evaluate_volume", "stack_slices", "metric_names"]
