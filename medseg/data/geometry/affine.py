"""Voxel spacing and the voxel-to-world affine of a NIfTI file, and the rule when they disagree.

A NIfTI header stores the voxel size twice: in ``pixdim`` (nibabel ``header.get_zooms()``) and
as the column norms of the sform/qform affine (nibabel ``img.affine``). They should agree. When
they do not, medseg follows this rule:

* **spacing = pixdim.** The affine's scale is discarded, its **direction** (each column divided by
  its norm) and its translation are kept: ``affine[:3, j] = direction[:, j] * pixdim[j]``.
* A :class:`GeometryWarning` is issued **once per process**, naming the first file affected
  (a dataset usually shares one header writer, so one line is enough).

Why pixdim: the known offender is ACDC (Bernard et al., IEEE TMI 2018): its files carry an sform
of ``diag(-1, -1, 1)`` with unit scale while pixdim holds the true 1.4-1.9 mm in-plane and 5-10 mm
slice spacing. Taking the affine's scale there gives 1 mm isotropic voxels, which is wrong by a
factor of up to 10 through-plane. ITK / SimpleITK also read the spacing from pixdim in that case
(and warn about "unexpected scales in sform"); unlike ITK, which then falls back to an identity
direction, medseg keeps the sform's direction, so that left/right stays what the file says.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medseg.errors import DataError, MedsegNote

RTOL = 1e-3  # relative disagreement tolerated between affine column norms and pixdim


class GeometryWarning(MedsegNote):
    """The file's geometry was repaired (e.g. spacing taken from pixdim instead of the affine)."""


_warned: list[str] = []  # first file reported (the warning is issued once per process)


def affine_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel spacing implied by an affine: the norms of its first three columns."""
    a = np.asarray(affine, dtype=float)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))


def _warn_once(source: str, norms: Sequence[float], zooms: Sequence[float]) -> None:
    if _warned:
        return
    _warned.append(source)
    shown_n = ", ".join(f"{v:g}" for v in norms)
    shown_z = ", ".join(f"{v:g}" for v in zooms)
    warnings.warn(
        f"{source}: affine voxel size ({shown_n}) disagrees with header pixdim ({shown_z}); "
        f"using pixdim for the spacing and the affine's direction (reported once; other files "
        f"with the same disagreement are repaired silently)",
        GeometryWarning,
        stacklevel=3,
    )


def reset_warning() -> None:
    """Forget that the disagreement warning was issued (tests, long-running services)."""
    _warned.clear()


def voxel_affine(affine: np.ndarray, zooms: Sequence[float], source: str = "") -> np.ndarray:
    """The affine with its column norms set to ``zooms`` (pixdim) when the two disagree.

    ``affine``: 4x4 voxel-to-world (nibabel ``img.affine``); ``zooms``: ``header.get_zooms()[:3]``.
    Returns a new array; an affine that already agrees comes back unchanged (as a copy).
    """
    a = np.array(affine, dtype=float)
    z = np.asarray([float(v) for v in zooms[:3]] + [1.0] * (3 - len(zooms[:3])))
    if np.any(~np.isfinite(z)) or np.any(z <= 0):
        return a  # no usable pixdim: the affine is all there is
    norms = np.linalg.norm(a[:3, :3], axis=0)
    if np.allclose(norms, z, rtol=RTOL, atol=0):
        return a
    _warn_once(source or "NIfTI file", norms.tolist(), z.tolist())
    safe = np.where(norms > 0, norms, 1.0)
    direction = a[:3, :3] / safe
    direction[:, norms == 0] = np.eye(3)[:, norms == 0]  # a degenerate column: fall back to the axis
    a[:3, :3] = direction * z
    return a


def check_geometry(affine: np.ndarray, zooms: Sequence[float], source: str) -> None:
    """Refuse geometry no volume can have: a non-finite or singular affine, a non-finite, zero or
    negative voxel size. Raises a one-line :class:`~medseg.errors.DataError` naming ``source``."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise DataError(f"{source}: the affine holds non-finite values (NaN or inf); cannot place the volume")
    z = np.asarray([float(v) for v in zooms[:3]])
    if not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise DataError(f"{source}: voxel spacing {z.tolist()} must be finite and positive")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12 * max(1.0, float(np.prod(z))):
        raise DataError(
            f"{source}: the affine is singular (a zero-length or repeated axis); cannot place the volume"
        )
