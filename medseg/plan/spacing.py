"""Target spacing and anisotropy, by nnU-Net's rules (Isensee et al., Nature Methods 2021,
"target spacing" in the online methods; nnU-Net v2 ``ExperimentPlanner``).

- The target spacing is the per-axis median of the cases' spacings.
- Exception for thick-slice data: when the median spacing of the coarsest axis is more than
  ``ANISOTROPY_THRESHOLD`` (3) times each other axis's, *and* that axis has fewer than a third
  as many voxels as the smallest other axis, the coarse axis gets the 10th percentile of its
  spacings instead (never finer than the coarsest other axis): resampling every case to the median would
  interpolate most cases' slices, the 10th percentile keeps the finer-sliced cases' detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

ANISOTROPY_THRESHOLD = 3.0


def anisotropy(spacing: Sequence[float]) -> float:
    """Largest over smallest spacing (1 for isotropic voxels)."""
    s = [float(v) for v in spacing]
    return max(s) / min(s)


def target_spacing(spacings: ArrayLike, shapes: ArrayLike | None = None) -> tuple[list[float], int | None]:
    """The target spacing (array-axis order) of cases with ``spacings`` (and ``shapes``, same
    axis order), and the axis that got the 10th-percentile rule (None when it did not apply).

    Without ``shapes`` only the spacing condition is checked.
    """
    sp = np.asarray(spacings, dtype=float)
    if sp.ndim != 2 or sp.shape[0] == 0 or (sp <= 0).any():
        raise ValueError(f"target_spacing needs positive spacings, one row per case; got {sp.tolist()}")
    target = np.median(sp, axis=0)
    if sp.shape[1] < 2:
        return target.tolist(), None
    worst = int(np.argmax(target))
    others = [a for a in range(sp.shape[1]) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[a] for a in others)
    aniso_voxels = True
    if shapes is not None:
        median_shape = np.median(np.asarray(shapes, dtype=float), axis=0)
        aniso_voxels = median_shape[worst] * ANISOTROPY_THRESHOLD < min(median_shape[a] for a in others)
    if not (aniso_spacing and aniso_voxels):
        return target.tolist(), None
    coarsest_other = max(target[a] for a in others)
    target[worst] = max(float(np.percentile(sp[:, worst], 10)), coarsest_other)
    return target.tolist(), worst
