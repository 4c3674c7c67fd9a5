"""Connected-component clean-up of label maps, 2D or 3D: keep the largest component, drop small ones.

Components are found by ``scipy.ndimage.label``. ``connectivity`` is the number of axes two
voxels may differ in and still touch: 1 = faces only (4-neighbourhood in 2D, 6 in 3D), ``ndim``
= faces, edges and corners (8 in 2D, 26 in 3D; the default, as in nnU-Net). Removed voxels
become background (0). Every function returns a new array and leaves its input unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
    c = ndim if connectivity is None else int(connectivity)
    if not 1 <= c <= ndim:
        raise ValueError(f"connectivity must be in 1..{ndim} for a {ndim}D mask, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, c)


def component_sizes(mask: np.ndarray, connectivity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label the components of a boolean mask: ``(labels, sizes)`` with ``sizes[j]`` the voxel
    count of component ``j + 1`` (labels are numbered in scan order)."""
    m = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(m, structure=_structure(m.ndim, connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, sizes


def largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """The largest connected component of a boolean mask (the first in scan order on a tie);
    an empty mask stays empty."""
    labels, sizes = component_sizes(mask, connectivity)
    if sizes.size == 0:
        return np.zeros(labels.shape, dtype=bool)
    return labels == int(np.argmax(sizes)) + 1


def drop_small_components(mask: np.ndarray, min_size: int, connectivity: int | None = None) -> np.ndarray:
    """The boolean mask without its components of fewer than ``min_size`` voxels."""
    labels, sizes = component_sizes(mask, connectivity)
    keep = np.concatenate([[False], sizes >= int(min_size)])
    return keep[labels]


def _clear(labels: np.ndarray, region: np.ndarray, kept: np.ndarray) -> np.ndarray:
    out = np.array(labels, copy=True)
    out[region & ~kept] = 0
    return out


def keep_largest_foreground(
    labels: np.ndarray, classes: Iterable[int] | None = None, connectivity: int | None = None
) -> np.ndarray:
    """Treat ``classes`` (default: every non-zero label) as one foreground, keep its largest
    component, set the foreground outside it to background."""
    lab = np.asarray(labels)
    region = lab != 0 if classes is None else np.isin(lab, list(classes))
    return _clear(lab, region, largest_component(region, connectivity))


def keep_largest_per_class(
    labels: np.ndarray, classes: Iterable[int], connectivity: int | None = None
) -> np.ndarray:
    """For each class in ``classes`` separately, keep only its largest component."""
    out = np.array(labels, copy=True)
    for c in classes:
        region = out == c
        out[region & ~largest_component(region, connectivity)] = 0
    return out


def remove_small_per_class(
    labels: np.ndarray, min_sizes: Mapping[int, int], connectivity: int | None = None
) -> np.ndarray:
    """For each class ``c`` in ``min_sizes``, remove its components smaller than ``min_sizes[c]`` voxels."""
    out = np.array(labels, copy=True)
    for c, size in min_sizes.items():
        region = out == c
        out[region & ~drop_small_components(region, size, connectivity)] = 0
    return out
