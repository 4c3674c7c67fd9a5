"""Folders of label maps on disk, for scoring existing predictions: find, pair by name, read.

Formats: 2D images (PNG, TIFF, BMP...), NIfTI (``.nii.gz``/``.nii``; spacing from the header),
HDF5 / npz (a ``label``/``pred``/``seg``... array, ``spacing`` when the file has one) and ``.npy``
(what ``medseg predict`` writes for arrays). Names are paired after removing the extension, an
nnU-Net channel suffix (``_0000``) and a MONAI / common postfix (``_seg``, ``_pred``, ``_mask``...),
so ``case_0000.nii.gz``, ``case/case_seg.nii.gz`` (MONAI's folder per case) and ``case.nii.gz``
all pair up as ``case``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.nifti import read_nifti_image
from medseg.data.readers import ARRAY_EXTS, IMAGE_EXTS, NIFTI_EXTS, file_id, read_mask_2d
from medseg.errors import DataError

LABEL_EXTS = (*NIFTI_EXTS, *ARRAY_EXTS, ".npy", *IMAGE_EXTS)
ARRAY_KEYS = ("label", "pred", "prediction", "seg", "segmentation", "mask", "labels", "gt")
LABEL_DIRS = ("masks", "labelsTr", "labelsTs", "labels")
POSTFIX = re.compile(r"(_\d{4})?(_(seg|pred|prediction|segmentation|mask|label|labels|gt|trans))?$")


def case_key(path: Path) -> str:
    """The name a label file is paired by: ``case_0000_seg.nii.gz`` -> ``case``."""
    stem = file_id(path)
    if stem.lower().endswith(".npy"):
        stem = stem[:-4]
    return POSTFIX.sub("", stem) or stem


def _is_label_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(LABEL_EXTS)


def label_folder(folder: Path) -> list[Path]:
    """The label files of ``folder``: its own files, else those of a ``masks/`` or ``labelsTr/``...
    subfolder, else one level down (MONAI writes one folder per case)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    own = sorted(p for p in folder.iterdir() if _is_label_file(p))
    if own:
        return own
    for d in LABEL_DIRS:
        if (folder / d).is_dir():
            return label_folder(folder / d)
    nested = sorted(p for sub in folder.iterdir() if sub.is_dir() for p in sub.iterdir() if _is_label_file(p))
    if not nested:
        raise DataError(f"{folder}: no label files ({', '.join(LABEL_EXTS[:6])}...)")
    return nested


def index_folder(folder: Path) -> dict[str, Path]:
    """``{case key: file}`` of a label folder; two files with one key are an error naming both."""
    out: dict[str, Path] = {}
    for p in label_folder(folder):
        key = case_key(p)
        if key in out:
            raise DataError(f"{p}: pairs as '{key}', like {out[key]}; rename one of them")
        out[key] = p
    return out


@dataclass
class LabelFile:
    """A label map as stored (raw values), with its voxel spacing when the file records one."""

    path: Path
    values: np.ndarray
    spacing: tuple[float, ...] | None


def _array_file(path: Path) -> tuple[np.ndarray, object]:
    try:
        if path.name.lower().endswith(".npy"):
            return np.load(path, allow_pickle=False), None
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                key = next((k for k in ARRAY_KEYS if k in names), names[0] if len(names) == 1 else None)
                if key is None:
                    raise DataError(
                        f"{path}: no label array (looked for {', '.join(ARRAY_KEYS)}; found {names})"
                    )
                return np.asarray(z[key]), (np.asarray(z["spacing"]) if "spacing" in names else None)
        import h5py  # h5py: heavy import, loaded only for HDF5 files

        with h5py.File(path, "r") as f:
            key = next((k for k in ARRAY_KEYS if k in f), None)
            if key is None:
                raise DataError(
                    f"{path}: no label array (looked for {', '.join(ARRAY_KEYS)}; found {list(f)})"
                )
            spacing = f.attrs.get("spacing", f[key].attrs.get("spacing"))
            return np.asarray(f[key][()]), spacing
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read label array (truncated or corrupt: {e})") from None


def _spacing(value: object, ndim: int, path: Path) -> tuple[float, ...] | None:
    if value is None:
        return None
    sp = np.asarray(value, dtype=float).ravel()
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DataError(f"{path}: 'spacing' must hold {ndim} positive numbers, got {sp.tolist()}")
    return tuple(float(v) for v in sp)


def read_label_file(path: Path) -> LabelFile:
    """Read one label map: ``[H, W]`` (2D images) or ``[D, H, W]`` (NIfTI in z, y, x order, arrays
    as stored) with its spacing in the same axis order (None for 2D images)."""
    name = path.name.lower()
    if name.endswith(NIFTI_EXTS):
        arr, spacing, _ = read_nifti_image([path])
        if arr.shape[-1] != 1:
            raise DataError(f"{path}: a label map must have one channel, got {arr.shape[-1]}")
        return LabelFile(path, arr[..., 0], spacing)
    if name.endswith(IMAGE_EXTS):
        return LabelFile(path, read_mask_2d(path, "label map"), None)
    values, raw_spacing = _array_file(path)
    if values.ndim not in (2, 3):
        raise DataError(f"{path}: a label map must be 2D or 3D, got shape {values.shape}")
    return LabelFile(path, values, _spacing(raw_spacing, values.ndim, path))
