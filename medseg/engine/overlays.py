"""Overlay images: prediction as a translucent fill, ground truth as a contour."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Distinct colours for classes 1..N (class 0 is background and not drawn).
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.uint8,
)


def colour(k: int) -> np.ndarray:
    return PALETTE[k % len(PALETTE)] if k < len(PALETTE) else PALETTE[1 + k % (len(PALETTE) - 1)]


def to_rgb(display: np.ndarray) -> np.ndarray:
    img = np.asarray(display)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        img = ((img - lo) / (hi - lo + 1e-12) * 255).clip(0, 255).astype(np.uint8)
    return img[..., :3]


def overlay(
    display: np.ndarray, pred: np.ndarray, target: np.ndarray | None = None, alpha: float = 0.4
) -> np.ndarray:
    """RGB uint8 image: each predicted class filled in its colour, each ground-truth class
    outlined in the same colour (so misses show as empty outlines, false positives as fill
    without outline)."""
    out = to_rgb(display).astype(np.float32)
    for k in np.unique(pred):
        if k == 0:
            continue
        m = pred == k
        out[m] = (1 - alpha) * out[m] + alpha * colour(int(k))
    if target is not None:
        for k in np.unique(target):
            if k == 0:
                continue
            m = target == k
            edge = m & ~ndimage.binary_erosion(m, iterations=max(1, min(m.shape) // 256))
            out[edge] = colour(int(k))
    return out.clip(0, 255).astype(np.uint8)


def side_by_side(display: np.ndarray, pred: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    """Image | overlay, for a quick look (small images are enlarged, nearest-neighbour)."""
    base = to_rgb(display)
    k = max(1, 256 // max(base.shape[:2]))
    if k > 1:
        base, pred = base.repeat(k, 0).repeat(k, 1), pred.repeat(k, 0).repeat(k, 1)
        target = None if target is None else target.repeat(k, 0).repeat(k, 1)
    pad = np.full((base.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([base, pad, overlay(base, pred, target)], axis=1)


def case_overlay(case: dict, labels: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """:func:`side_by_side` of one predicted case. A volume shows the slice with the most
    ground truth (or, without ground truth, the most predicted foreground)."""
    display = np.asarray(case["display"])
    if labels.ndim == 3:
        ref = target if target is not None else labels
        z = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
        return side_by_side(display[z], labels[z], None if target is None else target[z])
    return side_by_side(display, labels, target)
