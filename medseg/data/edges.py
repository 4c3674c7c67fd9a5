"""Edge targets and U-Net weight maps derived from label masks (numpy, one sample at a time).

The data pipeline calls these after augmentation when a loss ``needs`` ``"edge"`` (BEFUnet's
edge supervision) or ``"weight_map"`` (U-Net boundary-weighted cross-entropy), so that nothing
is recomputed per step on the GPU.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from medseg.errors import DataError

# The border term is dropped where it is below w0 * _TAIL: objects farther than the matching
# distance are skipped, which keeps the cost proportional to the objects' neighbourhoods.
_TAIL = 1e-6


def _check_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise DataError(f"{name} must be a 2D (or 3D) label map; got shape {mask.shape}")
    if mask.dtype == bool:
        return mask.astype(np.int64)
    if not np.issubdtype(mask.dtype, np.integer):
        if np.issubdtype(mask.dtype, np.floating) and np.all(np.mod(mask, 1) == 0):
            return mask.astype(np.int64)
        raise DataError(f"{name} must hold integer labels; got dtype {mask.dtype}")
    return mask


def edge_target(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Semantic edge map of a label mask: 1 where a label change lies within ``width`` pixels.

    A pixel is an edge pixel when its ``(2·width+1)``-wide neighbourhood (Chebyshev distance
    ``width``) holds more than one label, so each boundary is ``2·width`` pixels thick, split
    evenly between the two sides. The image border is not an edge. Returns float32 in {0, 1}
    (a subset of the [0, 1] annotator-agreement range BEFUnet's eq. 14 accepts).
    """
    mask = _check_mask(mask)
    if width < 1:
        raise ValueError(f"edge width must be >= 1; got {width}")
    size = 2 * int(width) + 1
    hi = ndimage.maximum_filter(mask, size=size, mode="nearest")
    lo = ndimage.minimum_filter(mask, size=size, mode="nearest")
    return (hi != lo).astype(np.float32)


def class_balance_weights(mask: np.ndarray) -> np.ndarray:
    """``w_c(x) = N / (K · N_c)`` for the class ``c`` of pixel ``x`` (``K`` classes present).

    Every present class gets the same total weight; the mean weight over the image is 1.
    """
    mask = _check_mask(mask)
    labels, inverse, counts = np.unique(mask, return_inverse=True, return_counts=True)
    per_class = mask.size / (len(labels) * counts.astype(np.float64))
    return per_class[inverse.reshape(mask.shape)].astype(np.float32)


def _objects(mask: np.ndarray, instances: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Object id map (0 = no object) and the number of objects."""
    if instances is not None:
        inst = _check_mask(instances, "instances")
        if inst.shape != mask.shape:
            raise DataError(f"instances shape {inst.shape} differs from mask shape {mask.shape}")
        ids, relabelled = np.unique(inst, return_inverse=True)
        relabelled = relabelled.reshape(inst.shape)
        if ids[0] == 0:
            return relabelled, len(ids) - 1
        return relabelled + 1, len(ids)
    objects = np.zeros(mask.shape, dtype=np.int64)
    count = 0
    for c in np.unique(mask):
        if c == 0:
            continue
        lab, n = ndimage.label(mask == c)  # connected components of each foreground class
        objects[lab > 0] = lab[lab > 0] + count
        count += n
    return objects, count


def unet_weight_map(
    mask: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    instances: np.ndarray | None = None,
) -> np.ndarray:
    """U-Net weight map (Ronneberger et al. 2015, eq. 2), float32 of the mask's shape:

    ``w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))``

    ``w_c`` balances class frequencies (:func:`class_balance_weights`); ``d1``/``d2`` are the
    Euclidean distances (in pixels) to the nearest and second-nearest object. Objects are the
    non-zero ids of ``instances`` when given, otherwise the connected components of each
    foreground class of ``mask``. As in the paper, the border term applies to background
    pixels (label 0 in ``mask``; also 0 in ``instances`` when given), i.e. the gaps separating
    touching objects; with fewer than two objects it is 0. Terms below ``w0·1e-6`` are
    skipped (objects are only searched within the distance where the term could exceed it).
    """
    mask = _check_mask(mask)
    if w0 < 0 or sigma <= 0:
        raise ValueError(f"need w0 >= 0 and sigma > 0; got w0={w0}, sigma={sigma}")
    weights = class_balance_weights(mask).astype(np.float64)
    objects, n = _objects(mask, instances)
    if n < 2 or w0 == 0:
        return weights.astype(np.float32)
    reach = sigma * math.sqrt(2.0 * math.log(1.0 / _TAIL))  # d1 + d2 beyond this: term < w0·_TAIL
    margin = int(math.ceil(reach))
    d1 = np.full(mask.shape, np.inf)
    d2 = np.full(mask.shape, np.inf)
    for obj_slices, obj_id in zip(ndimage.find_objects(objects), range(1, n + 1)):
        if obj_slices is None:
            continue
        window = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, size))
            for s, size in zip(obj_slices, mask.shape)
        )
        d = ndimage.distance_transform_edt(objects[window] != obj_id)
        a, b = d1[window], d2[window]
        b[...] = np.where(d < a, a, np.minimum(b, d))
        a[...] = np.minimum(a, d)
    border = mask == 0
    if instances is not None:
        border &= objects == 0
    both = border & np.isfinite(d2)
    weights[both] += w0 * np.exp(-((d1[both] + d2[both]) ** 2) / (2.0 * sigma**2))
    return weights.astype(np.float32)
