"""NIfTI volumes (MSD / nnU-Net layouts): read images and labels, write predictions back.

Arrays come back as ``[D, H, W, C]`` images and ``[D, H, W]`` labels in storage order reversed
(D = z, H = y, W = x), with the geometry needed to write a prediction in the source's own grid
and the pixdim-corrected voxel affine (:mod:`medseg.data.geometry`).
Failures are one-line :class:`~medseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_write
from medseg.data.geometry.affine import check_geometry, voxel_affine
from medseg.data.geometry.case import Geometry, restore_labels
from medseg.data.readers import NIFTI_EXTS, check_finite, one_line
from medseg.errors import DataError, MedsegNote

MANY_CHANNELS = 8  # more input channels than this in one volume is warned about (MSD has at most 4)


def _load_nifti(path: Path, what: str) -> Any:
    import nibabel as nib  # nibabel: heavy import, loaded only for NIfTI cases

    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except Exception as e:
        raise DataError(f"{path}: cannot read NIfTI {what} (truncated or corrupt: {one_line(e)})") from None
    if data.dtype.kind not in "biuf":  # complex or RGB voxels would lose parts silently
        raise DataError(f"{path}: NIfTI {what} has voxels of type {data.dtype}; expected real numbers")
    return img, data


def _xyz_to_zyx(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        return np.ascontiguousarray(data.transpose(2, 1, 0))
    if data.ndim == 4:
        return np.ascontiguousarray(data.transpose(2, 1, 0, 3))
    raise DataError(f"{path}: expected a 3D or 4D NIfTI array, got shape {data.shape}")


def nifti_geometry(img: Any, source: str) -> tuple[tuple[float, float, float], dict]:
    """Spacing ``(sz, sy, sx)`` of a loaded NIfTI and the geometry dict of :func:`read_nifti_image`.

    The spacing is the header's pixdim; ``voxel_affine`` is the affine with that spacing (see
    :mod:`medseg.data.geometry.affine` for the rule when the file's affine disagrees, as in ACDC),
    ``affine`` the file's own affine, kept so that a prediction is written with the input's header.
    """
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    check_geometry(np.asarray(img.affine, dtype=float), zooms, source)
    voxel = voxel_affine(np.asarray(img.affine, dtype=float), zooms, source)
    geometry = {
        "source": source,
        "affine": np.asarray(img.affine, dtype=float).tolist(),
        "voxel_affine": voxel.tolist(),
        "spacing_xyz": list(zooms),
        "shape_xyz": [int(s) for s in img.shape[:3]] + [1] * (3 - len(img.shape[:3])),
        "layout": "zyx",
    }
    return (zooms[2], zooms[1], zooms[0]), geometry


def read_nifti_image(paths: list[Path]) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Read one NIfTI volume (4D = channels last, MSD) or several single-channel files (nnU-Net
    ``_0000``, ``_0001``...). Returns ``[D, H, W, C]`` (D = z, H = y, W = x), spacing (sz, sy, sx)
    and the geometry needed by :func:`save_nifti_like`."""
    chans = []
    first = None
    for p in paths:
        img, data = _load_nifti(p, "image")
        arr = _xyz_to_zyx(data, p)
        if arr.ndim == 3:
            arr = arr[..., None]
        if first is None:
            first = img
        elif arr.shape[:3] != chans[0].shape[:3]:
            raise DataError(
                f"{p}: channel volume shape {arr.shape[:3]} differs from {paths[0].name} {chans[0].shape[:3]}"
            )
        chans.append(arr)
    image = chans[0] if len(chans) == 1 else np.concatenate(chans, axis=-1)
    if image.shape[-1] > MANY_CHANNELS:
        warnings.warn(
            f"{paths[0]}: {image.shape[-1]} channels (a 4-D NIfTI's last axis); is it a time series "
            "rather than modalities? Each frame becomes one model input channel",
            MedsegNote,
            stacklevel=2,
        )
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32, copy=False)
    check_finite(image, paths[0])
    spacing, geometry = nifti_geometry(first, str(paths[0]))
    return image, spacing, geometry


def read_nifti_label(path: Path) -> np.ndarray:
    """Read a ``[D, H, W]`` (z, y, x) label volume."""
    return read_nifti_label_geometry(path)[0]


def read_nifti_label_geometry(path: Path) -> tuple[np.ndarray, dict]:
    """A ``[D, H, W]`` (z, y, x) label volume and its geometry (as :func:`nifti_geometry`)."""
    img, data = _load_nifti(path, "label")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 and data.ndim != 2:
        raise DataError(f"{path}: label volume must be 3D, got shape {data.shape}")
    arr = _xyz_to_zyx(data, path)
    check_finite(arr, path)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise DataError(f"{path}: label volume holds non-integer values")
    _, geometry = nifti_geometry(img, str(path))
    return arr, geometry


def save_nifti_like(labels: np.ndarray, geometry: dict | Geometry, path: str | Path) -> Path:
    """Write a label map as NIfTI with the affine, header and shape of the source image, atomically.

    ``geometry``: a case's :class:`~medseg.data.geometry.Geometry` (``labels`` in the case layout,
    mapped back to the file's grid first) or the file's geometry dict (``labels`` ``[z, y, x]``).
    """
    import nibabel as nib  # nibabel: heavy import, loaded only for NIfTI cases

    if isinstance(geometry, Geometry):
        labels, geometry = restore_labels(labels, geometry), geometry.header
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [D, H, W], got shape {labels.shape}")
    arr = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(
        np.uint8 if labels.max(initial=0) < 256 and labels.min(initial=0) >= 0 else np.int16
    )
    expected = tuple(geometry.get("shape_xyz", arr.shape))
    if tuple(arr.shape) != expected:
        raise ValueError(f"labels shape (x, y, z) {arr.shape} does not match the source image {expected}")
    header = _source_header(geometry)
    if header is not None:
        header.set_data_shape(arr.shape)
    out = nib.Nifti1Image(arr, np.asarray(geometry["affine"], dtype=float), header=header)
    out.set_data_dtype(arr.dtype)
    out.header.set_slope_inter(1.0, 0.0)
    path = Path(path)
    gz = path.name.lower().endswith(".gz")

    def write(tmp: Path) -> None:
        raw = out.to_bytes()  # header and data of a single-file .nii
        tmp.write_bytes(gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw)

    return atomic_write(path, write)


def _source_header(geometry: dict) -> Any:
    """The source file's NIfTI header (pixdim, qform/sform codes, units) when the source is a 3-D
    NIfTI file (a 4-D multi-channel one included: its shape is replaced); None otherwise."""
    import nibabel as nib  # nibabel: heavy import, loaded only for NIfTI cases

    src = geometry.get("source")
    if not src or not str(src).lower().endswith(NIFTI_EXTS) or not Path(src).is_file():
        return None
    return nib.load(src).header.copy()  # type: ignore[attr-defined]
