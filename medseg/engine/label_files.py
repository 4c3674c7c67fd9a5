"""Folders of label maps on disk, for scoring existing predictions: find, pair by name, read.

Formats: 2D images (PNG, TIFF, BMP...), NIfTI (``.nii.gz``/``.nii``; spacing from the header, the
pixdim rule of :mod:`medseg.data.geometry.affine` included), NRRD / MHA / MHD (SimpleITK),
HDF5 / npz (a ``label``/``pred``/``seg``... array, ``spacing`` when the file has one) and ``.npy``
(what ``medseg predict`` writes for arrays). Files pair by name without the extension; names
left unpaired then pair after removing an nnU-Net channel suffix (``_0000``) and a MONAI / common
postfix (``_seg``, ``_pred``, ``_mask``...), so ``case_0000.nii.gz``, ``case/case_seg.nii.gz``
(MONAI's folder per case) and ``case.nii.gz`` pair up, while ``img_0001``/``img_0002`` stay apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.itk_io import ITK_EXTS
from medseg.data.readers import ARRAY_EXTS, IMAGE_EXTS, NIFTI_EXTS, file_id, read_mask_2d
from medseg.data.volume_io import read_volume_label
from medseg.errors import DataError

LABEL_EXTS = (*NIFTI_EXTS, *ITK_EXTS, *ARRAY_EXTS, ".npy", *IMAGE_EXTS)
AFFINE_ATOL = 1e-3  # mm: two label volumes on the same grid agree far better than this
ARRAY_KEYS = ("label", "pred", "prediction", "seg", "segmentation", "mask", "labels", "gt")
LABEL_DIRS = ("masks", "labelsTr", "labelsTs", "labels")
POSTFIX = re.compile(r"(_\d{4})?(_(seg|pred|prediction|segmentation|mask|label|labels|gt|trans))?$")


def file_stem(path: Path) -> str:
    """A label file's name without its extension (``case.nii.gz`` -> ``case``)."""
    stem = file_id(path)
    return stem[:-4] if stem.lower().endswith(".npy") else stem


def case_key(stem: str) -> str:
    """The looser name used for files an exact name did not pair: ``case_0000_seg`` -> ``case``."""
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
    """``{name: file}`` of a label folder (names as :func:`file_stem`); a repeated name is an error."""
    out: dict[str, Path] = {}
    for p in label_folder(folder):
        stem = file_stem(p)
        if stem in out:
            raise DataError(f"{p}: has the same name as {out[stem]}; rename one of them")
        out[stem] = p
    return out


def _loose(names: list[str], where: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        key = case_key(n)
        if key in out:
            raise DataError(f"{where}: '{n}' and '{out[key]}' both pair as '{key}'; rename one of them")
        out[key] = n
    return out


def pair_names(
    preds: dict[str, Path], refs: dict[str, Path], pred_dir: Path, ref_dir: Path
) -> list[tuple[str, Path, Path]]:
    """``[(case, prediction, reference)]``: exact names first, then :func:`case_key` for the rest
    (the case is named after the reference)."""
    exact = sorted(set(preds) & set(refs))
    pairs = [(k, preds[k], refs[k]) for k in exact]
    loose_p = _loose([k for k in preds if k not in refs], pred_dir)
    loose_r = _loose([k for k in refs if k not in preds], ref_dir)
    pairs += [(loose_r[k], preds[loose_p[k]], refs[loose_r[k]]) for k in sorted(set(loose_p) & set(loose_r))]
    return sorted(pairs)


@dataclass
class LabelFile:
    """A label map as stored (raw values), with its voxel spacing when the file records one."""

    path: Path
    values: np.ndarray
    spacing: tuple[float, ...] | None
    affine: np.ndarray | None = None  # voxel (x, y, z) -> world mm, for volumes with a geometry


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
    if name.endswith((*NIFTI_EXTS, *ITK_EXTS)):
        values, geometry = read_volume_label(path)
        sx, sy, sz = (float(v) for v in geometry["spacing_xyz"])
        return LabelFile(path, values, (sz, sy, sx), np.asarray(geometry["voxel_affine"], dtype=float))
    if name.endswith(IMAGE_EXTS):
        return LabelFile(path, read_mask_2d(path, "label map"), None)
    values, raw_spacing = _array_file(path)
    if values.ndim not in (2, 3):
        raise DataError(f"{path}: a label map must be 2D or 3D, got shape {values.shape}")
    return LabelFile(path, values, _spacing(raw_spacing, values.ndim, path))


def check_same_grid(pred: LabelFile, ref: LabelFile) -> None:
    """One error line naming both files when a prediction and its reference do not share a voxel
    grid: another shape, or (volumes with a geometry) another affine."""
    if pred.values.shape != ref.values.shape:
        raise DataError(
            f"{pred.path}: shape {pred.values.shape} differs from reference {ref.path} {ref.values.shape}"
        )
    if (
        pred.affine is not None
        and ref.affine is not None
        and not np.allclose(pred.affine, ref.affine, atol=AFFINE_ATOL, rtol=0)
    ):
        worst = float(np.abs(pred.affine - ref.affine).max())
        raise DataError(
            f"{pred.path}: affine differs from reference {ref.path} (by up to {worst:.4g} mm): "
            "not the same voxel grid"
        )
