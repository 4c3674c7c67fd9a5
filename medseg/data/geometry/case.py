"""A volume case in its canonical layout, and the exact way back to the file it came from.

A reader returns a volume in storage order reversed (``[z, y, x]``, :mod:`medseg.data.nifti`)
with the file's own geometry (a ``header`` dict: affine, pixdim-corrected voxel affine, spacing,
shape, ITK origin/direction). :func:`canonical_case` turns it into the **case layout** every
model, loss and metric sees:

* reoriented to RAS (permutations and flips only: exact), then optionally resampled to a target
  spacing (:func:`~medseg.data.geometry.grid.to_model_grid`, nnU-Net's rules);
* axes ordered ``[D, H, W]`` with **D the slice axis** (the largest spacing; ties take the first
  RAS axis, :func:`~medseg.data.geometry.orientation.slice_axis`, or the configured one) and H, W
  the other two in reversed RAS order. An axial volume (thick S axis) is ``[S, A, R]``, the
  same ``[z, y, x]`` order a RAS-stored file had before.

:class:`Geometry` keeps all of it; :func:`restore_labels` maps a case-layout prediction back to
the stored ``[z, y, x]`` grid, so that it is written with the input's exact affine, header,
spacing and shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.data.geometry.affine import affine_spacing
from medseg.data.geometry.grid import GridRecord, restore_prediction, to_model_grid
from medseg.data.geometry.orientation import case_slice_axis, from_ras, to_ras

RAS_NAMES = ("R", "A", "S")
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # slice planes and the RAS axis they cut


@dataclass(frozen=True)
class Geometry:
    """Where a case-layout volume sits in the world and how to return to its file.

    ``header``: the file's geometry as read (``affine``, ``voxel_affine``, ``spacing_xyz``,
    ``shape_xyz``, ``source``; ITK files also ``origin_lps``/``direction_lps``), written back
    with predictions. ``grid``: stored ``(x, y, z)`` -> RAS (-> target spacing). ``order``: the RAS
    axis of each case axis (slice axis first). ``spacing``: mm per case axis. ``affine``: case
    index ``(d, h, w)`` -> RAS world millimetres.
    """

    header: dict
    grid: GridRecord
    order: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray

    @property
    def source(self) -> str:
        return str(self.header.get("source", ""))

    @property
    def slice_axis(self) -> str:
        """The RAS axis the case is sliced along (``"S"``: axial slices)."""
        return RAS_NAMES[self.order[0]]

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """The file's array shape, ``(x, y, z)``."""
        return tuple(int(v) for v in self.header["shape_xyz"])  # type: ignore[return-value]

    @property
    def stored_affine(self) -> np.ndarray:
        """The file's own affine (before the pixdim rule), as written back with predictions."""
        return np.asarray(self.header["affine"], dtype=float)


def case_order(slice_axis: int) -> tuple[int, int, int]:
    """RAS axes in case order: the slice axis, then the other two in reversed RAS order."""
    rest = [a for a in (2, 1, 0) if a != slice_axis]
    return (slice_axis, rest[0], rest[1])


def _ras_slice_axis(voxel_affine: np.ndarray, plane: str) -> int:
    return case_slice_axis(voxel_affine) if plane == "auto" else PLANE_AXIS[plane]


def canonical_case(
    image: np.ndarray,
    header: dict,
    labels: np.ndarray | None = None,
    *,
    target_spacing: Sequence[float | None] | None = None,
    plane: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Stored ``[z, y, x, C]`` image (and ``[z, y, x]`` labels) -> the case layout ``[D, H, W, C]``.

    ``target_spacing``: mm per case axis (slice axis first); None keeps the file's spacing and
    the arrays' values exactly (reorientation only). ``plane``: "auto" (slice along the largest
    spacing) or "axial" / "coronal" / "sagittal". Images come back float32 when resampled, in
    their own dtype otherwise; labels keep their dtype (resampled as nnU-Net: linear one-hot).
    """
    voxel = np.asarray(header["voxel_affine"], dtype=float)
    order = case_order(_ras_slice_axis(voxel, plane))
    xyz = np.asarray(image).transpose(2, 1, 0, *range(3, image.ndim))
    lab_xyz = None if labels is None else np.asarray(labels).transpose(2, 1, 0)
    ras_target: list[float | None] | None = None
    if target_spacing is not None:
        ras_target = [0.0, 0.0, 0.0]
        for case_axis, ras_axis in enumerate(order):
            mm = target_spacing[case_axis]
            ras_target[ras_axis] = None if mm is None else float(mm)  # None: keep the file's
    if ras_target is None:  # no interpolation at all: keep the dtype, skip the resampler
        ras, ras_affine, reo = to_ras(xyz, voxel)
        lab_ras = None if lab_xyz is None else to_ras(lab_xyz, voxel)[0]
        spacing = affine_spacing(ras_affine)
        label_dtype = np.dtype(np.uint8) if labels is None else np.asarray(labels).dtype
        rec = GridRecord(reo, tuple(ras.shape[:3]), spacing, spacing, tuple(ras.shape[:3]), label_dtype)
        grid_affine = ras_affine
    else:
        ras, lab_ras, grid_affine, rec = to_model_grid(xyz, voxel, ras_target, lab_xyz)
    perm = (*order, *range(3, ras.ndim))
    case_image = np.ascontiguousarray(ras.transpose(perm))
    case_labels = None if lab_ras is None else np.ascontiguousarray(lab_ras.transpose(order))
    case_affine = np.eye(4)
    case_affine[:, :3] = grid_affine[:, list(order)]
    case_affine[:, 3] = grid_affine[:, 3]
    spacing3 = affine_spacing(case_affine)
    geometry = Geometry(header, rec, order, (spacing3[0], spacing3[1], spacing3[2]), case_affine)
    return case_image, case_labels, geometry


def to_grid_order(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A case-layout array ``[D, H, W, ...]`` in RAS axis order (the resampled grid's order)."""
    inverse = tuple(int(i) for i in np.argsort(geometry.order))
    return array.transpose(*inverse, *range(3, array.ndim))


def restore_labels(labels: np.ndarray, geometry: Geometry, *, label_mode: str = "nearest") -> np.ndarray:
    """A case-layout label map ``[D, H, W]`` back in the stored ``[z, y, x]`` grid of its file:
    inverse resampling (``label_mode``), inverse reorientation, the file's axis order."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [D, H, W], got shape {labels.shape}")
    grid = geometry.grid
    ras = to_grid_order(labels, geometry)
    if tuple(ras.shape) != grid.model_shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the case grid {grid.model_shape}")
    if grid.model_shape == grid.ras_shape and grid.model_spacing == grid.ras_spacing:
        stored = from_ras(ras, grid.reorientation)
    else:
        stored, _ = restore_prediction(ras, grid, kind="labels", label_mode=label_mode)
        stored = stored.astype(labels.dtype, copy=False)
    return np.ascontiguousarray(stored.transpose(2, 1, 0))


def restore_probabilities(proba: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Case-layout per-class maps ``[D, H, W, K]`` back in the stored ``[z, y, x, K]`` grid
    (linear; nearest along a low-resolution axis), float32."""
    ras = to_grid_order(np.asarray(proba), geometry)
    stored, _ = restore_prediction(ras, geometry.grid, kind="probabilities")
    return np.ascontiguousarray(stored.transpose(2, 1, 0, 3))
