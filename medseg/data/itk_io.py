"""NRRD, MetaImage (MHA/MHD) and DICOM series through SimpleITK (the optional ``medseg[itk]`` extra).

Arrays come back as the NIfTI reader returns them (:mod:`medseg.data.nifti`): images
``[D, H, W, C]`` and labels ``[D, H, W]`` with D = z, H = y, W = x, the spacing ``(sz, sy, sx)``
and the same geometry dict (``affine`` in RAS world coordinates, ``voxel_affine``,
``spacing_xyz``, ``shape_xyz``, ``layout``), so the geometry tools of :mod:`medseg.data.geometry`
work unchanged. ITK stores physical points in LPS: ``p = origin + direction @ (spacing * index)``
with index ``(x, y, z)``; the RAS affine is that map with its first two rows negated. The LPS
origin and direction are kept too, so that :func:`save_like` writes a prediction with the
input's own header values.

A DICOM series is a folder of slices (one series; several are refused with their ids) or one
``.dcm`` file; the slices are ordered by their position (GDCM's series file names).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry.affine import check_geometry
from medseg.data.readers import check_finite, check_pixels
from medseg.errors import DataError

ITK_EXTS = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_EXTS = (".dcm",)
INSTALL_HINT = 'pip install "medseg[itk]"'
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_itk_path(path: str | Path) -> bool:
    """True for NRRD / MetaImage files, ``.dcm`` files and folders holding ``.dcm`` files."""
    p = Path(path)
    if p.is_dir():
        return any(q.suffix.lower() in DICOM_EXTS for q in p.iterdir())
    return p.name.lower().endswith(ITK_EXTS + DICOM_EXTS)


def _sitk(path: Path) -> Any:
    try:
        import SimpleITK as sitk  # optional: the medseg[itk] extra
    except ImportError:
        raise DataError(f"{path}: reading NRRD, MHA/MHD and DICOM needs SimpleITK: {INSTALL_HINT}") from None
    return sitk


def _dicom_files(sitk: Any, path: Path) -> list[str]:
    folder = path if path.is_dir() else path.parent
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise DataError(f"{path}: no DICOM series found")
    if path.is_file():  # one file: the series it belongs to
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        key = "0020|000e"
        ids = [reader.GetMetaData(key).strip()] if reader.HasMetaDataKey(key) else ids[:1]
    if len(ids) > 1:
        raise DataError(
            f"{path}: {len(ids)} DICOM series in one folder ({', '.join(ids)}); give one folder each"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def _read(path: Path, what: str) -> Any:
    sitk = _sitk(path)
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    dicom = path.is_dir() or path.suffix.lower() in DICOM_EXTS
    try:
        if dicom:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_files(sitk, path))
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()  # header only: refuse an oversized image before decoding
            size = reader.GetSize()
            check_pixels(path, int(size[1]) if len(size) > 1 else 1, int(size[0]), what)
        return reader.Execute()
    except DataError:
        raise
    except RuntimeError as e:  # SimpleITK reports every failure as RuntimeError
        detail = " ".join(str(e).split())[-200:]
        raise DataError(f"{path}: cannot read {what} (truncated or corrupt: {detail})") from None


def itk_geometry(img: Any, source: str) -> tuple[tuple[float, float, float], dict]:
    """Spacing ``(sz, sy, sx)`` and the geometry dict (as :func:`medseg.data.nifti.nifti_geometry`)."""
    dim = img.GetDimension()
    spacing = np.ones(3)
    spacing[:dim] = img.GetSpacing()[:3]
    origin = np.zeros(3)
    origin[:dim] = img.GetOrigin()[:3]
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    size = [1, 1, 1]
    size[:dim] = [int(s) for s in img.GetSize()[:3]]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    check_geometry(affine, spacing.tolist(), source)
    geometry = {
        "source": source,
        "affine": affine.tolist(),
        "voxel_affine": affine.tolist(),  # spacing and affine cannot disagree in ITK's model
        "spacing_xyz": spacing.tolist(),
        "shape_xyz": size,
        "layout": "zyx",
        "origin_lps": origin.tolist(),
        "direction_lps": direction.ravel().tolist(),
        "format": "dicom" if Path(source).is_dir() or source.lower().endswith(DICOM_EXTS) else "itk",
    }
    return (float(spacing[2]), float(spacing[1]), float(spacing[0])), geometry


def _as_zyx(sitk: Any, img: Any, path: Path) -> np.ndarray:
    arr = sitk.GetArrayFromImage(img)  # [z, y, x] (+ components last), or [y, x] for 2D
    scalar_dims = img.GetDimension()
    if scalar_dims == 2:
        arr = arr[None]
    elif scalar_dims != 3:
        raise DataError(f"{path}: expected a 2D or 3D image, got {scalar_dims} dimensions")
    if np.iscomplexobj(arr):
        raise DataError(f"{path}: image holds complex values; store a real image (e.g. the magnitude)")
    return arr


def read_itk_image(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Read an NRRD / MHA / MHD image or a DICOM series as ``[D, H, W, C]``, spacing, geometry."""
    path = Path(path)
    sitk = _sitk(path)
    img = _read(path, "image")
    arr = _as_zyx(sitk, img, path)
    if arr.ndim == 3:
        arr = arr[..., None]
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)
    check_finite(arr, path)
    spacing, geometry = itk_geometry(img, str(path))
    return np.ascontiguousarray(arr), spacing, geometry


def read_itk_label(path: str | Path) -> np.ndarray:
    """Read a label map (NRRD / MHA / MHD / DICOM) as ``[D, H, W]``."""
    return itk_label_geometry(path)[0]


def itk_label_geometry(path: str | Path) -> tuple[np.ndarray, dict]:
    """A label map (NRRD / MHA / MHD / DICOM) as ``[D, H, W]`` and its geometry dict."""
    path = Path(path)
    sitk = _sitk(path)
    img = _read(path, "label")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: label has {img.GetNumberOfComponentsPerPixel()} components; expected 1")
    arr = _as_zyx(sitk, img, path)
    check_finite(arr, path)
    return np.ascontiguousarray(arr), itk_geometry(img, str(path))[1]


def read_itk_info(path: str | Path) -> dict:
    """The geometry dict of an NRRD / MHA / MHD file from its header alone (nothing decoded)."""
    path = Path(path)
    sitk = _sitk(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        detail = " ".join(str(e).split())[-200:]
        raise DataError(f"{path}: cannot read the image header ({detail})") from None
    if reader.GetDimension() not in (2, 3):
        raise DataError(f"{path}: expected a 2D or 3D image, got {reader.GetDimension()} dimensions")
    return itk_geometry(reader, str(path))[1]


def prediction_path(source: str | Path, out_dir: str | Path, case_id: str) -> tuple[Path, str | None]:
    """Where the prediction of ``source`` goes: the input's format when SimpleITK writes it (NRRD,
    MHA, MHD), NIfTI for a DICOM series; the second value is a note for the log, or None."""
    name = Path(source).name.lower()
    ext = next((e for e in ITK_EXTS if name.endswith(e)), None)
    if ext is not None:
        return Path(out_dir) / f"{case_id}{'.nrrd' if ext == '.nhdr' else ext}", None
    return Path(out_dir) / f"{case_id}.nii.gz", f"{source}: DICOM series; prediction written as NIfTI"


def save_like(labels: np.ndarray, geometry: dict, path: str | Path) -> Path:
    """Write a ``[D, H, W]`` label map to ``path`` (NRRD, MHA, MHD or NIfTI by its suffix) with the
    spacing, origin and direction of the image ``geometry`` came from; nothing half-written."""
    path = Path(path)
    sitk = _sitk(path)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be [D, H, W], got shape {labels.shape}")
    shape_xyz = tuple(geometry["shape_xyz"])
    if labels.shape[::-1] != shape_xyz:
        raise ValueError(
            f"labels shape (x, y, z) {labels.shape[::-1]} does not match the source image {shape_xyz}"
        )
    img = sitk.GetImageFromArray(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.int16))
    img.SetSpacing([float(v) for v in geometry["spacing_xyz"]])
    affine = np.asarray(geometry["affine"], dtype=float)
    origin = geometry.get("origin_lps", (_LPS_TO_RAS @ affine[:3, 3]).tolist())
    direction = geometry.get("direction_lps")
    if direction is None:  # a NIfTI geometry: LPS direction from the RAS affine
        direction = (_LPS_TO_RAS @ affine[:3, :3] / np.asarray(geometry["spacing_xyz"])).ravel().tolist()
    img.SetOrigin([float(v) for v in origin])
    img.SetDirection([float(v) for v in direction])
    return _write_atomically(sitk, img, path)


def _write_atomically(sitk: Any, img: Any, path: Path) -> Path:
    """Write in a temporary folder beside ``path`` under the final name, then move the files in:
    the data file of a two-file format (MHD + RAW) first, the header last, each with a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(img, str(tmp / path.name), True)
        written = sorted(tmp.iterdir(), key=lambda p: p.name == path.name)  # header last
        for f in written:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
