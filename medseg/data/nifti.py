"""NIfTI volumes (MSD / nnU-Net layouts): read images and labels, write predictions back.

Arrays come back as ``[D, H, W, C]`` images and ``[D, H, W]`` labels in storage order reversed
(D = z, H = y, W = x), with the geometry needed to write a prediction in the source's own grid
and the pixdim-corrected voxel affine (:mod:`medseg.data.geometry`).
Failures are one-line :class:`~medseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry.affine import voxel_affine
from medseg.data.readers import check_finite, one_line
from medseg.errors import DataError

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
    voxel = voxel_affine(np.asarray(img.affine, dtype=float), zooms, source)
    geometry = {
        "source": source,
        "affine": np.asarray(img.affine, dtype=float).tolist(),
        "voxel_affine": voxel.tolist(),
        "spacing_xyz": list(zooms),
        "shape_xyz": [int(s) for s in img.shape[:3]],
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
            stacklevel=2,
        )
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32, copy=False)
    check_finite(image, paths[0])
    spacing, geometry = nifti_geometry(first, str(paths[0]))
    return image, spacing, geometry


def read_nifti_label(path: Path) -> np.ndarray:
    _, data = _load_nifti(path, "label")
    arr = _xyz_to_zyx(data, path)
    if arr.ndim != 3:
        raise DataError(f"{path}: label volume must be 3D, got shape {data.shape}")
    check_finite(arr, path)
    return arr


def save_nifti_like(labels: np.ndarray, geometry: dict, path: str | Path) -> Path:
    """Write a ``[D, H, W]`` label map as NIfTI with the affine and header of the source image."""
    import nibabel as nib  # nibabel: heavy import, loaded only for NIfTI cases

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [D, H, W], got shape {labels.shape}")
    arr = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8 if labels.max() < 256 else np.int16)
    expected = tuple(geometry.get("shape_xyz", arr.shape))
    if tuple(arr.shape) != expected:
        raise ValueError(f"labels shape (x, y, z) {arr.shape} does not match the source image {expected}")
    header = None
    src = geometry.get("source")
    if src and Path(src).exists():
        src_img: Any = nib.load(src)
        header = src_img.header.copy()
        if len(header.get_data_shape()) > 3:
            header = None  # a 4D (multi-channel) source header does not fit a 3D label map
    out = nib.Nifti1Image(arr, np.asarray(geometry["affine"], dtype=float), header=header)
    out.set_data_dtype(arr.dtype)
    out.header.set_slope_inter(1.0, 0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))
    return path
