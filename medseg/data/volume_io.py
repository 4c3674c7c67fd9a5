"""Volumes with a geometry, whatever their file format: NIfTI (nibabel) and, with the optional
``medseg[itk]`` extra, NRRD, MetaImage (MHA/MHD) and DICOM series (SimpleITK).

Readers return the stored ``[z, y, x(, C)]`` arrays and the file's geometry dict
(:mod:`medseg.data.nifti`, :mod:`medseg.data.itk_io`); :func:`read_case_volume` brings them to
the case layout (:func:`medseg.data.geometry.canonical_case`). :func:`write_prediction` maps a
case-layout prediction back and writes it in the input's own format and header: ``.nii.gz`` in,
``.nii.gz`` out; NRRD / MHA / MHD likewise; a DICOM series as NIfTI (said in the returned note).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry.case import PLANE_AXIS, Geometry, canonical_case, case_order, restore_labels
from medseg.data.geometry.orientation import case_slice_axis, ras_transform
from medseg.data.itk_io import (
    DICOM_EXTS,
    ITK_EXTS,
    is_itk_path,
    itk_label_geometry,
    prediction_path,
    read_itk_image,
    read_itk_info,
    save_like,
)
from medseg.data.nifti import nifti_geometry, read_nifti_image, read_nifti_label_geometry, save_nifti_like
from medseg.data.readers import NIFTI_EXTS
from medseg.errors import DataError

VOLUME_EXTS = (*NIFTI_EXTS, *ITK_EXTS)


def is_nifti(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_EXTS)


def is_volume_path(path: str | Path) -> bool:
    """NIfTI, NRRD, MHA/MHD files, ``.dcm`` files and folders holding a DICOM series."""
    return is_nifti(path) or is_itk_path(path)


def read_volume_image(paths: Sequence[Path]) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Stored ``[z, y, x, C]`` image, spacing ``(sz, sy, sx)`` and geometry of one volume (several
    NIfTI paths: the nnU-Net channel files of one case)."""
    if is_nifti(paths[0]):
        return read_nifti_image(list(paths))
    if len(paths) > 1:
        raise DataError(f"{paths[0]}: several channel files are supported for NIfTI only")
    return read_itk_image(paths[0])


def read_volume_label(path: Path) -> tuple[np.ndarray, dict]:
    """Stored ``[z, y, x]`` label volume and its geometry dict."""
    if is_nifti(path):
        return read_nifti_label_geometry(path)
    return itk_label_geometry(path)


def header_info(path: Path) -> dict:
    """The geometry dict of a volume read from its header only (NIfTI, NRRD, MHA/MHD); a DICOM
    series is read whole (its geometry is spread over its slices)."""
    if is_nifti(path):
        import nibabel as nib  # nibabel: heavy import, only needed for NIfTI datasets

        try:
            img: Any = nib.load(str(path))
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except Exception as e:
            raise DataError(f"{path}: cannot read NIfTI header ({e})") from None
        geometry = nifti_geometry(img, str(path))[1]
        geometry["ndim"] = len(img.shape)
        return geometry
    if path.is_dir() or path.suffix.lower() in DICOM_EXTS:
        return read_itk_image(path)[2]
    return read_itk_info(path)


def case_depth(geometry: dict, plane: str = "auto") -> int:
    """Number of slices of a volume in the case layout (along its slice axis)."""
    voxel = np.asarray(geometry["voxel_affine"], dtype=float)
    axis = case_slice_axis(voxel) if plane == "auto" else PLANE_AXIS[plane]
    ras_axis = case_order(axis)[0]
    t = ras_transform(voxel)  # row i: the RAS axis of stored axis i
    stored = next(i for i in range(3) if int(t[i][0]) == ras_axis)
    return int(geometry["shape_xyz"][stored])


def read_case_volume(
    image_paths: Sequence[Path],
    label_path: Path | None,
    *,
    target_spacing: Sequence[float | None] | None = None,
    plane: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Image ``[D, H, W, C]``, labels ``[D, H, W]`` (or None) and :class:`Geometry` of one case in
    the case layout. The label must share the image's shape and (within 1e-3 mm) its affine."""
    image, _, header = read_volume_image(image_paths)
    labels = None
    if label_path is not None:
        labels, lab_header = read_volume_label(label_path)
        check_label_grid(lab_header, header, label_path, image_paths[0])
    return canonical_case(image, header, labels, target_spacing=target_spacing, plane=plane)


def check_label_grid(
    geometry: dict, reference: dict, path: Path, reference_path: Path, atol: float = 1e-3
) -> None:
    """One clear error when two volumes do not share a voxel grid (shape, then affine)."""
    shape, ref_shape = tuple(geometry["shape_xyz"]), tuple(reference["shape_xyz"])
    if shape != ref_shape:
        raise DataError(f"{path}: shape (x, y, z) {shape} does not match {reference_path} {ref_shape}")
    a, b = np.asarray(geometry["voxel_affine"]), np.asarray(reference["voxel_affine"])
    if not np.allclose(a, b, atol=atol, rtol=0):
        worst = float(np.abs(a - b).max())
        raise DataError(
            f"{path}: affine differs from {reference_path} (by up to {worst:.4g} mm): not the same voxel grid"
        )


def write_prediction(
    labels: np.ndarray, geometry: Geometry, out_dir: Path, name: str
) -> tuple[Path, str | None]:
    """Write a case-layout label map in its input's format, grid and header; returns the file and a
    note for the log (a DICOM series is written as NIfTI), or None."""
    source = geometry.source
    if is_nifti(source) or not source:
        path = out_dir / f"{name}.nii.gz"
        return save_nifti_like(labels, geometry, path), None
    path, note = prediction_path(source, out_dir, name)
    stored = restore_labels(labels, geometry)
    if path.name.endswith(".nii.gz"):
        return save_nifti_like(stored, geometry.header, path), note
    return save_like(stored, geometry.header, path), note
