"""Intensity handling: the raw window mapped to [0, 1], per-channel normalisation, display images.

Each image is first mapped to a unit range (the ``data.intensity_clip`` window, 0..255 for 8-bit,
else the image's min..max) so that augmentation sees one scale; normalisation (z-score, min-max
or none) then uses statistics of the whole image or volume, as nnU-Net does per case
(Isensee et al., Nature Methods 2021).
"""

from __future__ import annotations

import numpy as np

SUBSAMPLE_LIMIT = 1 << 18


def intensity_range(image: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float]:
    """Raw values mapped to 0 and 1 before augmentation: the clip window, 0..255 for 8-bit, else min..max."""
    if clip is not None:
        return float(clip[0]), float(clip[1])
    if image.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(image.min()), float(image.max())
    return lo, (hi if hi > lo else lo + 1.0)


def _subsample(image: np.ndarray, limit: int = SUBSAMPLE_LIMIT) -> np.ndarray:
    n = image.size // image.shape[-1]
    if n <= limit:
        return image
    step = int(np.ceil(n / limit))
    return image.reshape(-1, image.shape[-1])[::step]


def normalisation_stats(
    image: np.ndarray, lo: float, hi: float, normalize: str, clip: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(shift, scale)`` with ``normalised = (unit - shift) / scale``.

    Statistics come from a strided subsample of at most 2**18 pixels of the image ``[..., C]``.
    """
    sub = np.ascontiguousarray(_subsample(image).reshape(-1, image.shape[-1]).T)
    unit = np.clip((sub.astype(np.float32) - lo) / (hi - lo), 0, 1)
    if normalize == "zscore":
        shift, scale = unit.mean(1), np.maximum(unit.std(1), 1e-6)
    elif normalize == "minmax":
        shift = unit.min(1)
        scale = np.maximum(unit.max(1) - shift, 1e-6)
    else:  # "none": undo the unit scaling (8-bit images stay divided by 255)
        if image.dtype == np.uint8 and clip is None:
            shift, scale = np.zeros(image.shape[-1]), np.ones(image.shape[-1])
        else:
            shift = np.full(image.shape[-1], -lo / (hi - lo))
            scale = np.full(image.shape[-1], 1.0 / (hi - lo))
    return shift.astype(np.float32), scale.astype(np.float32)


def display_rgb(unit: np.ndarray) -> np.ndarray:
    """uint8 RGB for overlays from a [0, 1] image ``[..., C]``."""
    rgb = unit[..., :3] if unit.shape[-1] >= 3 else np.repeat(unit[..., :1], 3, axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)
