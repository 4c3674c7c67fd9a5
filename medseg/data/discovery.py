"""Dataset discovery: which cases a path holds, and where each one's image, mask and ROI are.

Three on-disk layouts are recognised (:func:`detect_format`): a folder of 2D images with
``images/`` + ``masks/`` (+ an optional region-of-interest folder, DRIVE ``fov/``); HDF5 / npz
arrays (SSL4MIS ACDC slices and volumes, TransUNet Synapse); volumes with a geometry: NIfTI, and
with SimpleITK NRRD, MHA/MHD and DICOM series folders (MSD / nnU-Net ``imagesTr/`` +
``labelsTr/``, multi-channel as ``_0000``, ``_0001``..., or one file / series; the original
ACDC layout of per-patient subfolders with each label next to its image as ``IMAGE_gt.nii.gz``).
Discovery only lists files and reads headers; decoding is the case store's job.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.data.config import DataConfig
from medseg.data.itk_io import is_itk_path
from medseg.data.readers import ARRAY_EXTS, IMAGE_EXTS, NIFTI_EXTS, array_shape, file_id
from medseg.data.synthetic import generate_dataset
from medseg.data.volume_io import VOLUME_EXTS, case_depth, header_info
from medseg.errors import ConfigError, DataError, MedsegNote

ARRAY_SUBDIRS = (
    "slices",
    "volumes",
    "train_npz",
    "test_vol_h5",
    "data",
    "data/slices",
)  # ACDC, Synapse, SSL4MIS
LABEL_SUFFIX = (
    "_gt"  # ACDC (Bernard et al., IEEE TMI 2018): patient001_frame01_gt.nii.gz labels patient001_frame01
)


@dataclass
class Record:
    """One case on disk (or in memory): where its image, mask and region mask are."""

    id: str
    kind: str  # "image2d" | "array" | "nifti" | "itk" | "memory"
    image: tuple[Path, ...] = ()
    mask: Path | None = None
    roi: Path | None = None
    depth: int | None = None  # None: 2D case; D: volume of D slices
    index: int = -1  # position in the in-memory arrays (kind "memory")

    @property
    def source(self) -> str:
        return str(self.image[0]) if self.image else f"synthetic:{self.id}"


def _files(folder: Path, exts: Sequence[str]) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(tuple(exts))
    )


def _by_id(paths: list[Path], strip_suffix: str = "") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        key = file_id(p)
        if strip_suffix:
            if not key.endswith(strip_suffix):
                continue
            key = key[: -len(strip_suffix)]
        if key in out:
            raise DataError(f"{p}: two files have the id '{key}' ({out[key].name} and {p.name})")
        out[key] = p
    return out


def _format_of_file(root: Path) -> str:
    name = root.name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    if is_itk_path(root):
        return "itk"
    if name.endswith(ARRAY_EXTS):
        return "h5"
    if name.endswith(IMAGE_EXTS):
        return "folder"
    raise DataError(f"{root}: unknown file type (expected an image, .h5, .npz, .nii.gz, .nrrd, .mha or .mhd)")


def detect_format(root: Path, cfg: DataConfig | None = None) -> str:
    """Tell the layout of ``root``: folder, h5 (HDF5/npz arrays) or nifti."""
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        return _format_of_file(root)
    images_dir = cfg.images_dir if cfg else "images"
    if is_itk_path(root):  # a DICOM series folder
        return "itk"
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir() or _files(root, NIFTI_EXTS):
        return "nifti"
    if (root / images_dir).is_dir():
        return "folder"
    if any((root / d).is_dir() for d in ARRAY_SUBDIRS) or _files(root, ARRAY_EXTS):
        return "h5"
    if _files(root, VOLUME_EXTS) or any(p.is_dir() and is_itk_path(p) for p in root.iterdir()):
        return "itk"
    in_case_folders = _case_folder_volumes(root, lambda d: _files(d, VOLUME_EXTS))
    if in_case_folders:  # one subfolder per patient (ACDC's patient001/ ...)
        return "nifti" if any(f.name.lower().endswith(NIFTI_EXTS) for f in in_case_folders) else "itk"
    if _files(root, IMAGE_EXTS):
        return "folder"
    raise DataError(
        f"{root}: cannot tell the dataset format (expected images/ + masks/, imagesTr/ + "
        f"labelsTr/, .h5/.npz files, or volumes in per-case subfolders); set data.format"
    )


def _roi_folder(root: Path, cfg: DataConfig, flat: bool) -> Path | None:
    """The region-of-interest folder: ``data.roi_dir``, or with "auto" a ``fov/`` or ``roi/`` folder."""
    if cfg.roi_dir == "auto":
        return next((root / d for d in ("fov", "roi") if (root / d).is_dir()), None) if not flat else None
    if cfg.roi_dir:
        roi_dir = root / cfg.roi_dir
        if not roi_dir.is_dir():
            raise DataError(f"{roi_dir}: region-of-interest folder (data.roi_dir) not found")
        return roi_dir
    return None


def _folder_masks(root: Path, cfg: DataConfig, flat: bool, require_masks: bool) -> dict[str, Path]:
    mask_dir = root / cfg.masks_dir
    if mask_dir.is_dir() and not flat:
        return _by_id(_files(mask_dir, IMAGE_EXTS), cfg.mask_suffix)
    if require_masks:
        raise DataError(f"{root}: no '{cfg.masks_dir}/' folder of masks")
    return {}


def discover_folder(root: Path, cfg: DataConfig, require_masks: bool) -> list[Record]:
    """Cases of a 2D image folder (``images/`` + ``masks/``, or a flat folder of images to predict)."""
    if root.is_file():
        return [Record(file_id(root), "image2d", (root,))]
    img_dir = root / cfg.images_dir
    flat = not img_dir.is_dir()
    if flat:
        if require_masks:
            raise DataError(f"{root}: no '{cfg.images_dir}/' folder of images")
        img_dir = root
    images = _files(img_dir, IMAGE_EXTS)
    if not images:
        raise DataError(f"{img_dir}: no images found ({', '.join(IMAGE_EXTS)})")
    img_by_id = _by_id(images)
    masks = _folder_masks(root, cfg, flat, require_masks)
    if require_masks:
        orphans = sorted(set(masks) - set(img_by_id))
        if orphans:
            raise DataError(
                f"{masks[orphans[0]]}: mask has no matching image in {img_dir} ({len(orphans)} such masks)"
            )
    roi_dir = _roi_folder(root, cfg, flat)
    rois = _by_id(_files(roi_dir, IMAGE_EXTS)) if roi_dir is not None else {}
    records = []
    for cid, path in img_by_id.items():
        mask = masks.get(cid)
        if mask is None and require_masks:
            raise DataError(f"{path}: missing mask (no {cfg.masks_dir}/{cid}{cfg.mask_suffix}.* file)")
        roi = rois.get(cid)
        if roi_dir is not None and roi is None:
            raise DataError(f"{path}: missing region-of-interest mask in {roi_dir}")
        records.append(Record(cid, "image2d", (path,), mask, roi))
    return records


def discover_arrays(root: Path, require_masks: bool) -> list[Record]:
    """Cases of HDF5 / npz files (one file per slice or volume, image and label inside)."""
    if root.is_file():
        files = [root]
    else:
        files = _files(root, ARRAY_EXTS)
        for d in ARRAY_SUBDIRS:
            if (root / d).is_dir():
                files += _files(root / d, ARRAY_EXTS)
    if not files:
        raise DataError(f"{root}: no .h5 or .npz files found (looked in {', '.join(ARRAY_SUBDIRS)} too)")
    records = []
    for cid, path in _by_id(files).items():
        shape, labelled = array_shape(path)
        if require_masks and not labelled:
            raise DataError(f"{path}: missing mask (no 'label' array)")
        depth = shape[0] if len(shape) == 3 and (labelled or shape[-1] > 4) else None
        records.append(Record(cid, "array", (path,), path if labelled else None, None, depth))
    return records


def _volume_files(folder: Path) -> list[Path]:
    """Volume files of ``folder`` (NIfTI, NRRD, MHA/MHD) and its DICOM series subfolders."""
    files = _files(folder, VOLUME_EXTS)
    series = sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_itk_path(p)
    )
    return files + series


def _case_folders(root: Path) -> list[Path]:
    """Subfolders of ``root`` that may hold one case each (not hidden, not a DICOM series)."""
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_itk_path(p)
    )


def _case_folder_volumes(root: Path, files_of: Callable[[Path], list[Path]]) -> list[Path]:
    """Volume files (``files_of`` a folder) in per-case subfolders of ``root``, or, when there are
    none, one level deeper: ACDC's ``database/testing/patient101/`` given as ``database/``."""
    folders = _case_folders(root)
    for _ in range(2):
        found = [f for d in folders for f in files_of(d)]
        if found:
            return found
        folders = [g for d in folders for g in _case_folders(d)]
    return []


def _volume_layout(root: Path) -> tuple[list[Path], Path | None]:
    """Image volumes of ``root`` and the folder of their labels (None: none, or next to the images).

    A folder without volumes of its own is searched one level down (one subfolder per patient),
    then two (a folder of such patient folders, e.g. ACDC's ``testing/``)."""
    if root.is_file() or (root.is_dir() and is_itk_path(root)):  # one file or one DICOM series
        return [root], None
    img_dir = next((root / d for d in ("imagesTr", "imagesTs") if (root / d).is_dir()), root)
    img_files = _volume_files(img_dir)
    if not img_files and img_dir == root:
        img_files = _case_folder_volumes(root, _volume_files)
    lab_dir = (
        root / "labelsTr"
        if img_dir.name == "imagesTr"
        else (root / "labelsTs" if (root / "labelsTs").is_dir() else None)
    )
    if not img_files:
        raise DataError(
            f"{img_dir}: no volumes found ({', '.join(VOLUME_EXTS)} or DICOM series folders, "
            f"here or in per-case subfolders)"
        )
    return img_files, lab_dir


def _labels_beside(files: list[Path], suffix: str) -> tuple[list[Path], list[Path]]:
    """Split volume files into images and the labels stored next to them as ``IMAGE{suffix}``."""
    labels = [p for p in files if file_id(p).endswith(suffix) and len(file_id(p)) > len(suffix)]
    chosen = set(labels)
    return [p for p in files if p not in chosen], labels


def _group_channels(img_files: list[Path]) -> dict[str, list[Path]]:
    """Case id -> its image files (nnU-Net ``CASE_0000``, ``CASE_0001``... are channels of one case)."""
    groups: dict[str, list[Path]] = {}
    ids = [file_id(p) for p in img_files]
    nnunet = all(re.search(r"_\d{4}$", i) for i in ids)
    for p, i in zip(img_files, ids):
        groups.setdefault(i[:-5] if nnunet else i, []).append(p)
    return groups


def _volume_labels(
    root: Path, img_files: list[Path], lab_dir: Path | None, suffix: str, require_masks: bool
) -> tuple[dict[str, list[Path]], dict[str, Path], bool]:
    """Image groups, labels by case id, and whether the labels lie next to their images."""
    if lab_dir is not None:
        if require_masks and not lab_dir.is_dir():
            raise DataError(f"{root}: no labelsTr/ folder next to imagesTr/")
        labels = _by_id(_volume_files(lab_dir)) if lab_dir.is_dir() else {}
        return _group_channels(img_files), labels, False
    images, beside = _labels_beside(img_files, suffix)
    groups = _group_channels(images)
    labels = _by_id(beside, suffix)
    if not images or not set(labels) & set(groups):  # no image has a label next to it: all are images
        return _group_channels(img_files), {}, False
    orphans = sorted(set(labels) - set(groups))
    if orphans and require_masks:
        raise DataError(
            f"{labels[orphans[0]]}: label has no image {orphans[0]}.* next to it ({len(orphans)} such labels)"
        )
    return groups, {k: v for k, v in labels.items() if k in groups}, True


def _volume_header(path: Path) -> dict:
    info = header_info(path)
    if info.get("ndim", 3) > 4:
        raise DataError(f"{path}: expected a 3D (or 4D multi-channel) volume, got {info['ndim']} dimensions")
    return info


def discover_volumes(
    root: Path, require_masks: bool, plane: str = "auto", label_suffix: str = ""
) -> list[Record]:
    """Cases of NIfTI / NRRD / MHA / DICOM volumes; nnU-Net ``CASE_0000``, ``CASE_0001``... files
    are channels of one case. Labels come from ``labelsTr/`` (``labelsTs/``) or, without such a
    folder, lie next to their image as ``IMAGE{label_suffix}`` (default ``_gt``, ACDC's). In that
    layout a 4-D volume without a label (ACDC's ``patient001_4d.nii.gz`` cine) is no case: such
    files are skipped, said in one warning. Each record's depth counts slices along the case's
    slice axis."""
    img_files, lab_dir = _volume_layout(root)
    suffix = label_suffix or LABEL_SUFFIX
    groups, labels, beside = _volume_labels(root, img_files, lab_dir, suffix, require_masks)
    records: list[Record] = []
    skipped: list[Path] = []
    for cid, paths in groups.items():
        lab = labels.get(cid)
        info = _volume_header(paths[0])
        if lab is None and beside and info.get("ndim", 3) == 4:
            skipped.append(paths[0])
            continue
        if lab is None and require_masks:
            where = f"{cid}{suffix}.* next to it" if beside else f"labelsTr/{cid}.nii.gz"
            raise DataError(f"{paths[0]}: missing label volume (no {where})")
        kind = "nifti" if paths[0].name.lower().endswith(NIFTI_EXTS) else "itk"
        records.append(Record(cid, kind, tuple(sorted(paths)), lab, None, case_depth(info, plane)))
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} 4-D volume(s) without a {suffix} label, e.g. {skipped[0].name} "
            f"(a time series such as ACDC's cine, not a case)",
            MedsegNote,
            stacklevel=2,
        )
    if not records:
        raise DataError(f"{root}: no image volumes found (only 4-D files without labels)")
    return records


discover_nifti = discover_volumes  # the name of the NIfTI-only version


def discover(cfg: DataConfig, require_masks: bool) -> tuple[list[Record], dict | None, str]:
    """Records of ``cfg``'s dataset, the in-memory arrays (synthetic data only) and the format."""
    if cfg.format == "synthetic":
        s = cfg.synthetic
        images, masks, _ = generate_dataset(s.kind, s.n, s.size, s.seed)
        recs = [Record(f"case_{k:03d}", "memory", index=k) for k in range(len(images))]
        return recs, {"images": images, "masks": masks}, "synthetic"
    if cfg.root is None:
        raise ConfigError("data.root is required (or data.format: synthetic)")
    root = Path(cfg.root).expanduser()
    fmt = detect_format(root, cfg) if cfg.format == "auto" else cfg.format
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if fmt == "folder":
        return discover_folder(root, cfg, require_masks), None, fmt
    if fmt in ("h5", "npz"):
        return discover_arrays(root, require_masks), None, "h5"
    return discover_volumes(root, require_masks, cfg.slice_axis, cfg.mask_suffix), None, fmt
