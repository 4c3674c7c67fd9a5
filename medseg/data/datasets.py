"""Datasets: folder images + masks, SSL4MIS/TransUNet HDF5 and Synapse npz, NIfTI (MSD / nnU-Net).

Discovery pairs files and reads split files; a :class:`CaseStore` decodes, validates and
(optionally) caches each case; :class:`TrainDataset` yields augmented fixed-size 2D
samples (volumes are trained slice-wise) and :class:`CaseDataset` yields whole cases at
native resolution (volumes as 3D) for validation, testing and prediction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.config import AugmentConfig, DataConfig
from medseg.data.readers import (
    ARRAY_EXTS,
    IMAGE_EXTS,
    NIFTI_EXTS,
    array_shape,
    file_id,
    read_array_case,
    read_image_2d,
    read_mask_2d,
    read_nifti_image,
    read_nifti_label,
)
from medseg.data.transforms import TrainTransform, sample_seed
from medseg.errors import DataError

IGNORE = 255
ARRAY_SUBDIRS = (
    "slices",
    "volumes",
    "train_npz",
    "test_vol_h5",
    "data",
    "data/slices",
)  # ACDC, Synapse, SSL4MIS
SPLIT_NAMES = {
    "train": ("train.txt", "train_slices.list", "train.list", "train_slices.txt"),
    "val": ("val.txt", "val.list", "valid.txt"),
    "test": ("test.txt", "test.list", "test_vol.txt"),
}
SPLIT_DIRS = (".", "lists/lists_Synapse", "splits")


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    """One case on disk (or in memory): where its image, mask and region mask are."""

    id: str
    kind: str  # "image2d" | "array" | "nifti" | "memory"
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


def detect_format(root: Path, cfg: DataConfig | None = None) -> str:
    """Tell the layout of ``root``: folder, h5 (HDF5/npz arrays) or nifti."""
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    name = root.name.lower()
    if root.is_file():
        if name.endswith(NIFTI_EXTS):
            return "nifti"
        if name.endswith(ARRAY_EXTS):
            return "h5"
        if name.endswith(IMAGE_EXTS):
            return "folder"
        raise DataError(f"{root}: unknown file type (expected an image, .h5, .npz or .nii.gz)")
    images_dir = cfg.images_dir if cfg else "images"
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir() or _files(root, NIFTI_EXTS):
        return "nifti"
    if (root / images_dir).is_dir():
        return "folder"
    if any((root / d).is_dir() for d in ARRAY_SUBDIRS) or _files(root, ARRAY_EXTS):
        return "h5"
    if _files(root, IMAGE_EXTS):
        return "folder"
    raise DataError(
        f"{root}: cannot tell the dataset format (expected images/ + masks/, imagesTr/ + "
        f"labelsTr/, or .h5/.npz files); set data.format"
    )


def discover_folder(root: Path, cfg: DataConfig, require_masks: bool) -> list[Record]:
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
    mask_dir = root / cfg.masks_dir
    masks: dict[str, Path] = {}
    if mask_dir.is_dir() and not flat:
        masks = _by_id(_files(mask_dir, IMAGE_EXTS), cfg.mask_suffix)
    elif require_masks:
        raise DataError(f"{root}: no '{cfg.masks_dir}/' folder of masks")
    if require_masks:
        orphans = sorted(set(masks) - set(img_by_id))
        if orphans:
            raise DataError(
                f"{masks[orphans[0]]}: mask has no matching image in {img_dir} ({len(orphans)} such masks)"
            )
    roi_dir = None
    if cfg.roi_dir == "auto":
        roi_dir = next((root / d for d in ("fov", "roi") if (root / d).is_dir()), None) if not flat else None
    elif cfg.roi_dir:
        roi_dir = root / cfg.roi_dir
        if not roi_dir.is_dir():
            raise DataError(f"{roi_dir}: region-of-interest folder (data.roi_dir) not found")
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


def discover_nifti(root: Path, require_masks: bool) -> list[Record]:
    import nibabel as nib

    if root.is_file():
        img_files, lab_dir = [root], None
    else:
        img_dir = next((root / d for d in ("imagesTr", "imagesTs") if (root / d).is_dir()), root)
        img_files = _files(img_dir, NIFTI_EXTS)
        lab_dir = (
            root / "labelsTr"
            if img_dir.name == "imagesTr"
            else (root / "labelsTs" if (root / "labelsTs").is_dir() else None)
        )
        if not img_files:
            raise DataError(f"{img_dir}: no NIfTI images (.nii / .nii.gz) found")
    groups: dict[str, list[Path]] = {}
    ids = [file_id(p) for p in img_files]
    nnunet = all(re.search(r"_\d{4}$", i) for i in ids)
    for p, i in zip(img_files, ids):
        groups.setdefault(i[:-5] if nnunet else i, []).append(p)
    labels = _by_id(_files(lab_dir, NIFTI_EXTS)) if lab_dir is not None and lab_dir.is_dir() else {}
    if require_masks and lab_dir is not None and not lab_dir.is_dir():
        raise DataError(f"{root}: no labelsTr/ folder next to imagesTr/")
    records = []
    for cid, paths in groups.items():
        lab = labels.get(cid)
        if lab is None and require_masks:
            raise DataError(f"{paths[0]}: missing label volume (no labelsTr/{cid}.nii.gz)")
        try:
            shape = nib.load(str(paths[0])).shape
        except Exception as e:
            raise DataError(f"{paths[0]}: cannot read NIfTI header ({e})") from None
        depth = int(shape[2]) if len(shape) >= 3 else 1
        records.append(Record(cid, "nifti", tuple(sorted(paths)), lab, None, depth))
    return records


def class_names_from_root(root: Path | None) -> list[str] | None:
    if root is None or not root.is_dir():
        return None
    if (root / "classes.txt").is_file():
        names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()]
        return names or None
    if (root / "dataset.json").is_file():
        try:
            labels = json.loads((root / "dataset.json").read_text()).get("labels", {})
        except (OSError, ValueError) as e:
            raise DataError(f"{root / 'dataset.json'}: cannot parse ({e})") from None
        pairs = []
        for k, v in labels.items():  # MSD: {"0": "background"}; nnU-Net v2: {"background": 0}
            if str(k).isdigit():
                pairs.append((int(k), str(v)))
            elif isinstance(v, int):
                pairs.append((v, str(k)))
        if pairs:
            return [n for _, n in sorted(pairs)]
    return None


# --------------------------------------------------------------------------- splits


def group_key(case_id: str) -> str:
    """Cases sharing a group (slices of a volume, frames of a patient) stay in the same split."""
    return re.sub(r"(_frame\d+)?(_slice_?\d+)?$", "", case_id) or case_id


def read_split_files(root: Path | None) -> dict[str, tuple[Path, list[str]]]:
    found: dict[str, tuple[Path, list[str]]] = {}
    if root is None or not root.is_dir():
        return found
    for d in SPLIT_DIRS:
        for split, names in SPLIT_NAMES.items():
            if split in found:
                continue
            for n in names:
                p = root / d / n
                if p.is_file():
                    ids = [
                        file_id(Path(ln.split()[0]))
                        for ln in p.read_text().splitlines()
                        if ln.strip() and not ln.lstrip().startswith("#")
                    ]
                    found[split] = (p, ids)
                    break
        if found:
            break
    return found


def _carve(
    ids: list[str], fraction: float, rng: np.random.Generator, min_one: bool
) -> tuple[list[str], list[str]]:
    groups = sorted({group_key(i) for i in ids})
    rng.shuffle(groups)
    n = int(round(fraction * len(groups)))
    if n == 0 and fraction > 0 and min_one and len(groups) >= 2:
        n = 1
    held = set(groups[:n])
    return [i for i in ids if group_key(i) not in held], [i for i in ids if group_key(i) in held]


def split_ids(ids: list[str], root: Path | None, cfg: DataConfig) -> dict[str, list[str]]:
    """train/val/test id lists: from split files when present, else a seeded group-aware split."""
    known = set(ids)
    files = read_split_files(root)
    rng = np.random.default_rng(cfg.split.seed)
    if files:
        out: dict[str, list[str]] = {}
        for split, (path, listed) in files.items():
            missing = [i for i in listed if i not in known]
            if missing:
                raise DataError(
                    f"{path}: lists '{missing[0]}' but no such case exists under {root} "
                    f"({len(missing)} missing ids)"
                )
            out[split] = listed
        if "train" not in out:
            taken = set(out.get("val", [])) | set(out.get("test", []))
            out["train"] = [i for i in ids if i not in taken]
        if "val" not in out:
            out["train"], out["val"] = _carve(out["train"], cfg.split.val_fraction, rng, True)
        out.setdefault("test", [])
    else:
        rest, test = _carve(list(ids), cfg.split.test_fraction, rng, True)
        frac = cfg.split.val_fraction / max(1e-9, 1.0 - cfg.split.test_fraction)
        train, val = _carve(rest, min(frac, 0.99), rng, True)
        out = {"train": train, "val": val, "test": test}
    if not out["train"]:
        raise DataError(f"{root}: no training cases after splitting {len(ids)} cases")
    return out


# --------------------------------------------------------------------------- loading


@dataclass
class Prepared:
    """A decoded, validated case: image in its native dtype, mask as class indices (255 = ignore)."""

    image: np.ndarray  # [H, W, C] or [D, H, W, C]
    mask: np.ndarray | None  # uint8 [H, W] or [D, H, W]
    roi: np.ndarray | None  # bool, same spatial shape
    lo: float  # raw intensity mapped to 0 ...
    hi: float  # ... and to 1 before augmentation
    shift: np.ndarray  # normalised = (unit - shift) / scale, per channel
    scale: np.ndarray
    spacing: tuple[float, ...] | None = None
    geometry: dict | None = None
    raw_values: np.ndarray | None = None  # distinct raw mask values (fingerprint)

    def unit(self, image: np.ndarray) -> np.ndarray:
        x = (image.astype(np.float32) - np.float32(self.lo)) * np.float32(1.0 / (self.hi - self.lo))
        return np.clip(x, 0.0, 1.0, out=x)

    def normalise(self, unit: np.ndarray) -> np.ndarray:
        return (unit - self.shift) / self.scale


def _convert_channels(image: np.ndarray, target: int, path: str) -> np.ndarray:
    c = image.shape[-1]
    if c == target:
        return image
    if c == 1:
        return np.repeat(image, target, axis=-1)
    if c in (3, 4) and target == 1:
        grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if image.dtype == np.uint8:
            grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return grey[..., None]
    if c == 4 and target == 3:
        return image[..., :3]
    raise DataError(f"{path}: image has {c} channels and cannot be converted to data.in_channels={target}")


@dataclass
class Settings:
    """Dataset-wide decisions taken once from the data and the config."""

    in_channels: int
    mapping: dict[int, int] | None  # raw -> class; None with a threshold
    threshold: float | None
    num_classes: int
    normalize: str
    clip: tuple[float, float] | None
    channel_source: str = ""


def auto_mapping(
    values: set[int], num_classes: int | None, where: str, first_seen: Mapping[int, str] | None = None
) -> dict[int, int]:
    """Default raw->class mapping: {0:0, 255:1} for 0/255 masks, identity for small integer labels."""
    if not values or values <= {0, 255}:
        return {0: 0, 255: 1}
    if values <= {0, 1}:
        return {0: 0, 1: 1}
    top = max(values)
    limit = num_classes if num_classes is not None else 64
    if min(values) >= 0 and top < limit:
        return {v: v for v in range(max(top + 1, num_classes or 0))}
    shown = sorted(values)
    shown_s = ", ".join(map(str, shown[:12])) + (", ..." if len(shown) > 12 else "")
    hint = (
        "data.mask_threshold: 128 (values look like JPEG noise)"
        if len(values) > 16
        else "data.mask_values, e.g. {" + ", ".join(f"{v}: {i}" for i, v in enumerate(shown[:4])) + "}"
    )
    odd = [v for v in shown if v not in (0, 255)]
    if first_seen and odd and odd[0] in first_seen:
        where = f"{first_seen[odd[0]]}: value {odd[0]};"
    else:
        where += ":"
    raise DataError(f"{where} mask values {{{shown_s}}} have no default class mapping; set {hint}")


def map_mask(raw: np.ndarray, settings: Settings, path: str) -> np.ndarray:
    """Raw mask values -> uint8 class indices; values outside the mapping are an error."""
    if settings.threshold is not None:
        return (raw >= settings.threshold).astype(np.uint8)
    if np.issubdtype(raw.dtype, np.floating):
        r = np.rint(raw)
        if not np.array_equal(r, raw):
            raise DataError(
                f"{path}: mask holds non-integer values (e.g. {raw[r != raw].flat[0]:g}); "
                f"set data.mask_threshold to binarise it"
            )
        raw = r.astype(np.int64)
    mapping = settings.mapping or {}
    if raw.dtype == np.uint8:
        import cv2

        bad = sorted(values_present(raw) - set(mapping))
        if bad:
            raise DataError(
                f"{path}: mask values {bad[:8]} are not in the class mapping "
                f"{_fmt_mapping(mapping)} (set data.mask_values or data.mask_threshold)"
            )
        lut = np.zeros(256, np.uint8)
        for k, v in mapping.items():
            if 0 <= k < 256:
                lut[k] = v
        out = cv2.LUT(raw, lut)
    else:
        vals, inv = np.unique(raw, return_inverse=True)
        bad = [int(v) for v in vals if int(v) not in mapping]
        if bad:
            raise DataError(
                f"{path}: mask values {bad[:8]} are not in the class mapping "
                f"{_fmt_mapping(mapping)} (set data.mask_values or data.mask_threshold)"
            )
        out = np.array([mapping[int(v)] for v in vals], np.int16)[inv.reshape(raw.shape)]
    out = out.astype(np.uint8)
    over = (out != IGNORE) & (out >= settings.num_classes)
    if over.any():
        raise DataError(
            f"{path}: mask class {int(out[over].max())} is outside 0..{settings.num_classes - 1} "
            f"(data.num_classes = {settings.num_classes})"
        )
    return out


def _fmt_mapping(m: Mapping[int, int]) -> str:
    items = list(m.items())
    s = ", ".join(f"{k}: {v}" for k, v in items[:8])
    return "{" + s + (", ..." if len(items) > 8 else "") + "}"


def _spatial_mismatch(a: tuple, b: tuple) -> str:
    def fmt(s: tuple) -> str:
        return "x".join(str(v) for v in (s[::-1] if len(s) == 2 else s))

    return f"{fmt(a)} vs {fmt(b)}"


@dataclass
class RawCase:
    image: np.ndarray
    mask: np.ndarray | None
    roi: np.ndarray | None
    spacing: tuple[float, ...] | None = None
    geometry: dict | None = None


class CaseStore:
    """Decodes records, checks them, and keeps them in memory when ``cache`` is on.

    Shared by the train/val/test datasets of one :func:`build_data` call.
    """

    def __init__(self, records: list[Record], cfg: DataConfig, memory: dict | None = None) -> None:
        self.records = records
        self.cfg = cfg
        self.memory = memory or {}
        self.use_masks = True
        self.settings: Settings | None = None
        self._cache: dict[int, Prepared] = {}
        self._raw: dict[int, RawCase] = {}
        self._last: tuple[int, Prepared] | None = None

    def __len__(self) -> int:
        return len(self.records)

    # -- raw decoding
    def read_raw(self, i: int) -> RawCase:
        if i in self._raw:
            return self._raw.pop(i)
        rec = self.records[i]
        raw = self._decode(rec)
        if not self.use_masks:
            raw.mask = None
        return raw

    def _decode(self, rec: Record) -> RawCase:
        if rec.kind == "memory":
            img, mask = self.memory["images"][rec.index], self.memory["masks"][rec.index]
            return RawCase(img if img.ndim == 3 else img[..., None], mask, None)
        if rec.kind == "image2d":
            image = read_image_2d(rec.image[0])
            mask = read_mask_2d(rec.mask) if rec.mask is not None else None
            roi = read_mask_2d(rec.roi, "region-of-interest mask") > 0 if rec.roi is not None else None
            for other, what, path in ((mask, "mask", rec.mask), (roi, "region-of-interest mask", rec.roi)):
                if other is not None and other.shape != image.shape[:2]:
                    raise DataError(
                        f"{path}: {what} size does not match image {rec.image[0].name} "
                        f"({_spatial_mismatch(other.shape, image.shape[:2])}, WxH)"
                    )
            return RawCase(image, mask, roi)
        if rec.kind == "array":
            image, label = read_array_case(rec.image[0])
            return RawCase(image, label, None)
        image, spacing, geometry = read_nifti_image(list(rec.image))
        label = None
        if rec.mask is not None:
            label = read_nifti_label(rec.mask)
            if label.shape != image.shape[:3]:
                raise DataError(
                    f"{rec.mask}: label shape {label.shape[::-1]} (x, y, z) does not match image "
                    f"{rec.image[0].name} {image.shape[:3][::-1]}"
                )
        return RawCase(image, label, None, spacing, geometry)

    def scan(self, num_classes: int | None, validate_all: bool) -> tuple[dict[int, str], dict[int, int]]:
        """Decode cases to learn channel count and raw mask values; with ``validate_all`` decode every
        case (keeping them for :meth:`get` when caching)."""
        idx = range(len(self.records)) if validate_all else range(min(8, len(self.records)))
        values: dict[int, str] = {}  # raw value -> first file holding it
        channels: dict[int, int] = {}
        for i in idx:
            raw = self.read_raw(i)
            channels[i] = raw.image.shape[-1]
            if raw.mask is not None and self.cfg.mask_threshold is None:
                for v in values_present(raw.mask):
                    values.setdefault(v, str(self.records[i].mask))
            if validate_all and self.cfg.cache:
                self._raw[i] = raw
        return values, channels

    def prepare(self, raw: RawCase, rec: Record) -> Prepared:
        s = self.settings
        assert s is not None
        image = raw.image
        if image.shape[-1] != s.in_channels:
            if self.cfg.in_channels is None:
                raise DataError(
                    f"{rec.source}: image has {image.shape[-1]} channels but {s.channel_source} has "
                    f"{s.in_channels}; set data.in_channels to convert"
                )
            image = _convert_channels(image, s.in_channels, rec.source)
        if image.dtype not in (np.uint8, np.float32):
            image = image.astype(np.float32)
        mask = None
        raw_values = None
        if raw.mask is not None:
            raw_values = np.array(sorted(values_present(raw.mask)))
            mask = map_mask(raw.mask, s, str(rec.mask))
        roi = raw.roi
        if mask is not None and (mask == IGNORE).any():
            roi = (mask != IGNORE) if roi is None else (roi & (mask != IGNORE))
            mask = np.where(mask == IGNORE, 0, mask).astype(np.uint8)
        lo, hi = intensity_range(image, s.clip)
        # statistics of the whole image / volume (strided subsample of at most 2**18 pixels)
        sub = np.ascontiguousarray(_subsample(image).reshape(-1, image.shape[-1]).T)
        unit = np.clip((sub.astype(np.float32) - lo) / (hi - lo), 0, 1)
        if s.normalize == "zscore":
            shift, scale = unit.mean(1), np.maximum(unit.std(1), 1e-6)
        elif s.normalize == "minmax":
            shift = unit.min(1)
            scale = np.maximum(unit.max(1) - shift, 1e-6)
        else:  # "none": undo the unit scaling (8-bit images stay divided by 255)
            if image.dtype == np.uint8 and s.clip is None:
                shift, scale = np.zeros(image.shape[-1]), np.ones(image.shape[-1])
            else:
                shift = np.full(image.shape[-1], -lo / (hi - lo))
                scale = np.full(image.shape[-1], 1.0 / (hi - lo))
        return Prepared(
            image,
            mask,
            roi,
            lo,
            hi,
            shift.astype(np.float32),
            scale.astype(np.float32),
            raw.spacing,
            raw.geometry,
            raw_values,
        )

    def get(self, i: int) -> Prepared:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        if self._last is not None and self._last[0] == i:  # consecutive slices of one volume
            return self._last[1]
        prep = self.prepare(self.read_raw(i), self.records[i])
        if self.cfg.cache:
            self._cache[i] = prep
        elif self.records[i].depth is not None:
            self._last = (i, prep)
        return prep


def values_present(mask: np.ndarray) -> set[int]:
    """Distinct values of a label array (fast histogram for 8-bit masks)."""
    if mask.dtype == np.uint8:
        import cv2

        hist = cv2.calcHist(
            [np.ascontiguousarray(mask.reshape(mask.shape[0], -1))], [0], None, [256], [0, 256]
        )
        return {int(v) for v in np.flatnonzero(hist.ravel())}
    if mask.dtype == bool:
        return {int(v) for v in np.unique(mask)}
    if np.issubdtype(mask.dtype, np.floating):
        return {int(v) for v in np.unique(np.rint(mask))}
    return {int(v) for v in np.unique(mask)}


def _subsample(image: np.ndarray, limit: int = 1 << 18) -> np.ndarray:
    n = image.size // image.shape[-1]
    if n <= limit:
        return image
    step = int(np.ceil(n / limit))
    return image.reshape(-1, image.shape[-1])[::step]


def intensity_range(image: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float]:
    """Raw values mapped to 0 and 1 before augmentation: the clip window, 0..255 for 8-bit, else min..max."""
    if clip is not None:
        return float(clip[0]), float(clip[1])
    if image.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(image.min()), float(image.max())
    return lo, (hi if hi > lo else lo + 1.0)


def display_rgb(unit: np.ndarray) -> np.ndarray:
    """uint8 RGB for overlays from a [0, 1] image ``[..., C]``."""
    rgb = unit[..., :3] if unit.shape[-1] >= 3 else np.repeat(unit[..., :1], 3, axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


# --------------------------------------------------------------------------- datasets


class TrainDataset(Dataset):
    """Augmented fixed-size 2D training samples; volumes contribute one sample per slice.

    ``set_epoch(e)`` changes the augmentation; each sample's RNG is seeded from
    ``(seed, epoch, index)``. The epoch lives in shared memory, so DataLoader workers, persistent
    ones included, see the new value (call ``set_epoch`` before iterating the loader).
    """

    def __init__(
        self,
        store: CaseStore,
        indices: list[int],
        cfg: DataConfig,
        aug: AugmentConfig,
        seed: int,
        extra_targets: tuple[str, ...] = (),
        target_options: Mapping[str, Mapping] | None = None,
    ) -> None:
        self.store, self.cfg, self.seed = store, cfg, int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.items: list[tuple[int, int | None]] = []
        for i in indices:
            d = store.records[i].depth
            self.items += [(i, None)] if d is None else [(i, z) for z in range(d)]
        self.repeats = cfg.train_repeats
        self.transform = TrainTransform(cfg, aug)
        unknown = set(extra_targets) - {"weight_map", "edge"}
        if unknown:
            raise ValueError(f"unknown extra targets {sorted(unknown)}; known: edge, weight_map")
        self.extra_targets = tuple(extra_targets)
        self.target_options = {k: dict(v) for k, v in (target_options or {}).items()}

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def ids(self) -> list[str]:
        return [self._item_id(i) for i in range(len(self.items))]

    def _item_id(self, k: int) -> str:
        i, z = self.items[k]
        rid = self.store.records[i].id
        return rid if z is None else f"{rid}_slice_{z}"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = index % len(self.items)
        i, z = self.items[k]
        prep = self.store.get(i)
        image = prep.image if z is None else prep.image[z]
        mask = (
            np.zeros(image.shape[:2], np.uint8)
            if prep.mask is None
            else (prep.mask if z is None else prep.mask[z])
        )
        roi = None if prep.roi is None else (prep.roi if z is None else prep.roi[z]).astype(np.uint8)
        s = sample_seed(self.seed, self.epoch, index)
        image, mask, roi = self.transform.resize(np.ascontiguousarray(image), mask, roi, s)
        if image.ndim == 2:
            image = image[:, :, None]
        unit, mask, roi = self.transform.augment(prep.unit(image), mask, roi, (s + 1) & 0xFFFFFFFF)
        x = prep.normalise(unit)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "roi": torch.from_numpy(roi.astype(bool)),
            "id": self._item_id(k),
        }
        if self.extra_targets:
            from medseg.data import edges

            m = np.where(roi > 0, mask, 0).astype(np.int64)
            if "weight_map" in self.extra_targets:
                out["weight_map"] = torch.from_numpy(
                    np.asarray(
                        edges.unet_weight_map(m, **self.target_options.get("weight_map", {})),
                        dtype=np.float32,
                    )
                )
            if "edge" in self.extra_targets:
                out["edge"] = torch.from_numpy(
                    np.asarray(edges.edge_target(m, **self.target_options.get("edge", {})), dtype=np.float32)
                )
        return out


class CaseDataset(Dataset):
    """Whole cases at native resolution, normalised like training, without augmentation.

    Items: ``id``, ``image`` [C,H,W] or [D,C,H,W] float32, ``mask`` int64 or None, ``roi`` bool or
    None, ``spacing``, ``display`` uint8 [...,H,W,3], ``source``, ``geometry``. Iterate directly or
    use a DataLoader with ``batch_size=None`` (sizes differ).
    """

    def __init__(self, store: CaseStore, indices: list[int]) -> None:
        self.store, self.indices = store, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def ids(self) -> list[str]:
        return [self.store.records[i].id for i in self.indices]

    @property
    def volumetric(self) -> bool:
        return any(self.store.records[i].depth is not None for i in self.indices)

    def __getitem__(self, index: int) -> dict:
        i = self.indices[index]
        rec, prep = self.store.records[i], self.store.get(i)
        unit = prep.unit(prep.image)
        x = prep.normalise(unit)
        perm = (2, 0, 1) if x.ndim == 3 else (0, 3, 1, 2)
        return {
            "id": rec.id,
            "image": torch.from_numpy(np.ascontiguousarray(x.transpose(perm), dtype=np.float32)),
            "mask": None if prep.mask is None else torch.from_numpy(prep.mask.astype(np.int64)),
            "roi": None if prep.roi is None else torch.from_numpy(np.asarray(prep.roi, dtype=bool)),
            "spacing": prep.spacing,
            "display": display_rgb(unit),
            "source": rec.source,
            "geometry": prep.geometry,
        }


@dataclass
class DataBundle:
    """What :func:`build_data` returns."""

    train: TrainDataset
    val: CaseDataset
    test: CaseDataset
    num_classes: int
    class_names: list[str]
    in_channels: int
    volumetric: bool
    config: DataConfig
    splits: dict[str, list[str]] = field(default_factory=dict)
    store: CaseStore | None = None

    @property
    def mode(self) -> str:
        """Loss/model mode: 'binary' (one sigmoid output) for two classes, else 'multiclass'."""
        return "binary" if self.num_classes == 2 else "multiclass"


# --------------------------------------------------------------------------- building


def _records(cfg: DataConfig, require_masks: bool) -> tuple[list[Record], dict | None, str]:
    if cfg.format == "synthetic":
        from medseg.data.synthetic import generate_dataset

        s = cfg.synthetic
        images, masks, _ = generate_dataset(s.kind, s.n, s.size, s.seed)
        recs = [Record(f"case_{k:03d}", "memory", index=k) for k in range(len(images))]
        return recs, {"images": images, "masks": masks}, "synthetic"
    root = Path(cfg.root).expanduser()
    fmt = detect_format(root, cfg) if cfg.format == "auto" else cfg.format
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if fmt == "folder":
        return discover_folder(root, cfg, require_masks), None, fmt
    if fmt in ("h5", "npz"):
        return discover_arrays(root, require_masks), None, "h5"
    return discover_nifti(root, require_masks), None, fmt


def _settings(
    store: CaseStore, cfg: DataConfig, validate_all: bool, names: list[str] | None, where: str
) -> Settings:
    num_classes = cfg.num_classes or (len(cfg.class_names) if cfg.class_names else None)
    values, channels = store.scan(num_classes, validate_all)
    first = min(channels) if channels else 0
    in_ch = cfg.in_channels or (channels[first] if channels else 1)
    if cfg.mask_threshold is not None:
        mapping = None
        n = num_classes or 2
    else:
        mapping = (
            dict(cfg.mask_values)
            if cfg.mask_values is not None
            else auto_mapping(set(values), num_classes, where, values)
        )
        classes = [v for v in mapping.values() if v != IGNORE]
        n = num_classes or max(2, (max(classes) + 1) if classes else 2)
    if names is not None and num_classes is None and len(names) > n:
        n = len(names)
    src = store.records[first].source if channels else ""
    return Settings(in_ch, mapping, cfg.mask_threshold, n, cfg.normalize, cfg.intensity_clip, src)


def _names(cfg: DataConfig, n: int, found: list[str] | None) -> list[str]:
    if cfg.class_names is not None:
        return list(cfg.class_names)
    if found is not None and len(found) == n:
        return found
    if n == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class{k}" for k in range(1, n)]


def build_store(
    cfg: DataConfig, *, require_masks: bool = True, use_masks: bool = True, validate: bool | None = None
) -> tuple[CaseStore, str, list[str]]:
    """Discover, scan and validate a dataset; returns the store, the format and the class names."""
    records, memory, fmt = _records(cfg, require_masks)
    if not use_masks:
        for r in records:
            r.mask = None if r.kind != "array" else r.mask  # arrays hold image and label in one file
    store = CaseStore(records, cfg, memory)
    store.use_masks = use_masks
    root = None if cfg.root is None else Path(cfg.root).expanduser()
    found_names = (
        memory_names(cfg)
        if fmt == "synthetic"
        else class_names_from_root(root if root and root.is_dir() else None)
    )
    validate_all = cfg.validate_on_load if validate is None else validate
    store.settings = _settings(store, cfg, validate_all, found_names, str(root or "synthetic"))
    if validate_all:
        for i in range(len(records)):
            store.get(i)  # maps masks: raises on unknown values
    return store, fmt, _names(cfg, store.settings.num_classes, found_names)


def memory_names(cfg: DataConfig) -> list[str]:
    from medseg.data.synthetic import class_names

    return class_names(cfg.synthetic.kind)


def build_data(
    cfg: DataConfig,
    aug: AugmentConfig | None = None,
    *,
    seed: int = 0,
    extra_targets: tuple[str, ...] = (),
    target_options: Mapping[str, Mapping] | None = None,
) -> DataBundle:
    """Build the training, validation and test datasets of ``cfg``.

    ``extra_targets`` ("weight_map", "edge") add per-sample targets computed from the augmented
    mask with :mod:`medseg.data.edges`; ``target_options`` passes keyword arguments to them, e.g.
    ``{"weight_map": {"w0": 10, "sigma": 5}, "edge": {"width": 1}}``.
    """
    aug = aug or AugmentConfig()
    store, fmt, names = build_store(cfg)
    ids = [r.id for r in store.records]
    root = None if cfg.root is None else Path(cfg.root).expanduser()
    splits = split_ids(ids, root if fmt != "synthetic" and root and root.is_dir() else None, cfg)
    pos = {r.id: k for k, r in enumerate(store.records)}
    idx = {k: [pos[i] for i in v] for k, v in splits.items()}
    train = TrainDataset(store, idx["train"], cfg, aug, seed, tuple(extra_targets), target_options)
    val, test = CaseDataset(store, idx["val"]), CaseDataset(store, idx["test"])
    s = store.settings
    assert s is not None
    volumetric = (test if len(test) else val).volumetric if (len(test) or len(val)) else False
    return DataBundle(train, val, test, s.num_classes, names, s.in_channels, volumetric, cfg, splits, store)


def open_cases(
    source: str | Path | DataConfig,
    *,
    cfg: DataConfig | None = None,
    split: str | None = None,
    masks: bool | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
) -> CaseDataset:
    """Cases of an arbitrary image folder / file / dataset, for prediction and evaluation.

    ``source``: a path (a folder with or without images/ + masks/, one image, an .h5/.npz file, a NIfTI
    file or folder) or a :class:`DataConfig`. ``cfg``: the training data config whose channel
    conversion, mask mapping and normalisation are reused (its root is replaced by ``source``).
    ``split``: only that split's cases (same split rules as :func:`build_data`). ``masks``: True requires
    masks, False ignores them, None (default) uses them where present. ``in_channels`` /
    ``num_classes``: what the model expects (e.g. from its checkpoint); images are converted to it.
    """
    if isinstance(source, DataConfig):
        dcfg = source
    else:
        base = cfg or DataConfig(root=Path(source))
        dcfg = base.model_copy(update={"root": Path(source), "format": "auto"})  # layout of the new source
    update: dict = {}
    if in_channels is not None:
        update["in_channels"] = in_channels
    if num_classes is not None:
        update["num_classes"] = num_classes
        if dcfg.class_names is not None and len(dcfg.class_names) != num_classes:
            update["class_names"] = None
    if update:
        dcfg = dcfg.model_copy(update=update)
    store, fmt, _ = build_store(dcfg, require_masks=bool(masks), use_masks=masks is not False)
    indices = list(range(len(store.records)))
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError("split must be 'train', 'val' or 'test'")
        root = None if dcfg.root is None else Path(dcfg.root).expanduser()
        ids = split_ids([r.id for r in store.records], root if root and root.is_dir() else None, dcfg)[split]
        pos = {r.id: k for k, r in enumerate(store.records)}
        indices = [pos[i] for i in ids]
    return CaseDataset(store, indices)
