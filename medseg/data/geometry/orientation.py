"""Canonical orientation (RAS+) and the slice axis of a volume.

A volume can be stored in any axis order and direction; its affine maps voxel indices to world
coordinates, which NIfTI defines as RAS+ (+x towards the patient's Right, +y Anterior,
+z Superior). :func:`to_ras` permutes and flips the array so that voxel axes 0, 1, 2 increase
towards Right, Anterior and Superior (for oblique affines: the closest world axis, nibabel's
``io_orientation``), and :func:`from_ras` undoes it exactly (permutations and flips lose nothing).

The slice axis for 2D models is the axis with the largest spacing (the through-plane axis of
anisotropic MR/CT); ties, and isotropic volumes, take the first such axis in RAS order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.data.geometry.affine import affine_spacing

TIE_RTOL = 1e-3  # spacings within 0.1% count as equal when choosing the slice axis


@dataclass(frozen=True)
class Reorientation:
    """How a stored array was brought to RAS: enough to undo it exactly."""

    transform: np.ndarray  # nibabel orientation transform [[axis, flip], ...] stored -> RAS
    stored_shape: tuple[int, ...]  # spatial shape as stored
    stored_affine: np.ndarray  # affine as stored

    @property
    def identity(self) -> bool:
        return bool(np.array_equal(self.transform, [[0, 1], [1, 1], [2, 1]]))


def ras_transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform taking voxel axes of ``affine`` to RAS."""
    # nibabel: heavy import, only needed for volumes with an affine
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    return ornt_transform(io_orientation(np.asarray(affine, dtype=float)), axcodes2ornt("RAS"))


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reorientation]:
    """Reorient ``array`` (spatial axes first, in the affine's voxel order; trailing channels kept)
    to RAS. Returns the reoriented array, its affine and the :class:`Reorientation` to undo it."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff  # nibabel: heavy import

    affine = np.asarray(affine, dtype=float)
    t = ras_transform(affine)
    shape = tuple(int(s) for s in array.shape[:3])
    out = np.ascontiguousarray(apply_orientation(array, t))
    new_affine = affine @ inv_ornt_aff(t, shape)
    return out, new_affine, Reorientation(t, shape, affine.copy())


def from_ras(array: np.ndarray, reo: Reorientation) -> np.ndarray:
    """Undo :func:`to_ras`: the array back in its stored axis order and directions (exact)."""
    # nibabel: heavy import, only needed for volumes with an affine
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    inverse = ornt_transform(axcodes2ornt("RAS"), io_orientation(reo.stored_affine))
    out = np.ascontiguousarray(apply_orientation(array, inverse))
    if tuple(out.shape[:3]) != reo.stored_shape:
        raise ValueError(
            f"array of RAS shape {array.shape[:3]} does not match the stored shape {reo.stored_shape}"
        )
    return out


def slice_axis(spacing: Sequence[float]) -> int:
    """Axis with the largest spacing; on a tie (within 0.1 %) the first of them."""
    s = np.asarray(spacing, dtype=float)
    return int(np.flatnonzero(s >= s.max() * (1 - TIE_RTOL))[0])


def case_slice_axis(affine: np.ndarray) -> int:
    """Slice axis of a case in RAS order, from its (pixdim-corrected) affine."""
    t = ras_transform(affine)
    stored = affine_spacing(affine)
    ras = [0.0, 0.0, 0.0]
    for i, (axis, _) in enumerate(t):
        ras[int(axis)] = stored[i]
    return slice_axis(ras)
