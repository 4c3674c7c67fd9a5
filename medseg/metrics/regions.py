"""Metrics per region of a region-based (multilabel) task: every metric of
:func:`~medseg.metrics.case.evaluate_case` on the mask ``label in region`` of the prediction
and of the target (nnU-Net evaluates BraTS-like regions this way: whole tumour, tumour core,
enhancing tumour; Isensee et al. 2021, Nat. Methods 18:203)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.metrics.case import evaluate_case
from medseg.metrics.inputs import as_labels, check_pair


def evaluate_regions(
    pred_labels: Any,
    target_labels: Any,
    regions: Sequence[Sequence[int]],
    spacing: float | Sequence[float] | None = None,
    *,
    roi: Any | None = None,
    ignore_index: int | None = None,
    **kwargs: Any,
) -> dict[int, dict[str, Any]]:
    """All metrics of one case per region, keyed ``1..R`` in the order of ``regions``.

    ``pred_labels``, ``target_labels``: label maps; region ``r`` of each is ``np.isin(labels, r)``.
    Target voxels equal to ``ignore_index`` (and voxels outside ``roi``) are left out as in
    :func:`evaluate_case`; other keyword arguments (``empty``, ``nsd_tolerance``, ``surface``,
    ...) go to it.
    """
    p, t = as_labels(pred_labels, "pred_labels"), as_labels(target_labels, "target_labels")
    check_pair(p, t)
    ignored = None if ignore_index is None else t == ignore_index
    if ignored is not None and ignored.any():
        keep = ~ignored
        roi = keep if roi is None else np.asarray(roi, bool) & keep
    out: dict[int, dict[str, Any]] = {}
    for i, region in enumerate(regions, start=1):
        values = [int(v) for v in region]
        pr, tr = np.isin(p, values).astype(np.uint8), np.isin(t, values).astype(np.uint8)
        out[i] = evaluate_case(pr, tr, 2, spacing, roi=roi, **kwargs)[1]
    return out


__all__ = ["evaluate_regions"]
