"""The case store: decodes each discovered case, validates it, and caches it when asked.

One :class:`CaseStore` is shared by the train / validation / test datasets of one
:func:`~medseg.data.build.build_data` call. Raw cases (:class:`RawCase`) become
:class:`Prepared` ones: channels converted, mask mapped to class indices (ignored pixels moved
into the region-of-interest mask), and the per-case intensity window and normalisation fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.data.config import DataConfig
from medseg.data.discovery import Record
from medseg.data.geometry.case import Geometry
from medseg.data.intensity import intensity_range, normalisation_stats
from medseg.data.labels import IGNORE, map_mask, values_present
from medseg.data.readers import read_array_case, read_image_2d, read_mask_2d
from medseg.data.volume_io import read_case_volume
from medseg.errors import DataError


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


@dataclass
class RawCase:
    """A case as read from disk: native dtype image ``[..., C]``, raw mask values, ROI."""

    image: np.ndarray
    mask: np.ndarray | None
    roi: np.ndarray | None
    spacing: tuple[float, ...] | None = None
    geometry: Geometry | None = None  # volumes read with their affine (NIfTI, ITK)


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
    geometry: Geometry | None = None
    raw_values: np.ndarray | None = None  # distinct raw mask values (fingerprint)

    def unit(self, image: np.ndarray) -> np.ndarray:
        x = (image.astype(np.float32) - np.float32(self.lo)) * np.float32(1.0 / (self.hi - self.lo))
        return np.clip(x, 0.0, 1.0, out=x)

    def normalise(self, unit: np.ndarray) -> np.ndarray:
        return (unit - self.shift) / self.scale


def convert_channels(image: np.ndarray, target: int, path: str) -> np.ndarray:
    """Grey -> repeated channels, RGB(A) -> grey (ITU-R BT.601 luma), RGBA -> RGB; else an error."""
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


def _spatial_mismatch(a: tuple, b: tuple) -> str:
    def fmt(s: tuple) -> str:
        return "x".join(str(v) for v in (s[::-1] if len(s) == 2 else s))

    return f"{fmt(a)} vs {fmt(b)}"


def decode_record(rec: Record, memory: dict, cfg: DataConfig | None = None) -> RawCase:
    """Read one record's image, mask and ROI and check that their sizes agree. Volumes with a
    geometry come in the case layout (RAS, slice axis first; ``cfg.target_spacing`` applied)."""
    if rec.kind == "memory":
        img, mask = memory["images"][rec.index], memory["masks"][rec.index]
        return RawCase(img if img.ndim == 3 else img[..., None], mask, None)
    if rec.kind == "image2d":
        return _decode_image2d(rec)
    if rec.kind == "array":
        image, label, spacing = read_array_case(rec.image[0])
        return RawCase(image, label, None, spacing)
    return _decode_volume(rec, cfg)


def _decode_image2d(rec: Record) -> RawCase:
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


def _decode_volume(rec: Record, cfg: DataConfig | None) -> RawCase:
    target = cfg.target_spacing if cfg is not None else None
    plane = cfg.slice_axis if cfg is not None else "auto"
    image, label, geometry = read_case_volume(list(rec.image), rec.mask, target_spacing=target, plane=plane)
    return RawCase(image, label, None, geometry.spacing, geometry)


def prepare_case(raw: RawCase, rec: Record, s: Settings, cfg: DataConfig) -> Prepared:
    """Convert channels, map the mask, fold ignored pixels into the ROI, fix the intensity window."""
    image = raw.image
    if image.shape[-1] != s.in_channels:
        if cfg.in_channels is None:
            raise DataError(
                f"{rec.source}: image has {image.shape[-1]} channels but {s.channel_source} has "
                f"{s.in_channels}; set data.in_channels to convert"
            )
        image = convert_channels(image, s.in_channels, rec.source)
    if image.dtype not in (np.uint8, np.float32):
        image = image.astype(np.float32)
    mask = None
    raw_values = None
    if raw.mask is not None:
        raw_values = np.array(sorted(values_present(raw.mask)))
        mask = map_mask(raw.mask, s.mapping, s.threshold, s.num_classes, str(rec.mask))
    roi = raw.roi
    if mask is not None and (mask == IGNORE).any():
        roi = (mask != IGNORE) if roi is None else (roi & (mask != IGNORE))
        mask = np.where(mask == IGNORE, 0, mask).astype(np.uint8)
    lo, hi = intensity_range(image, s.clip)
    shift, scale = normalisation_stats(image, lo, hi, s.normalize, s.clip)
    return Prepared(image, mask, roi, lo, hi, shift, scale, raw.spacing, raw.geometry, raw_values)


class CaseStore:
    """Decodes records, checks them, and keeps them in memory when ``cache`` is on.

    Shared by the train/val/test datasets of one :func:`~medseg.data.build.build_data` call.
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

    def read_raw(self, i: int) -> RawCase:
        """Case ``i`` as read from disk (a case kept by :meth:`scan` is handed over once)."""
        if i in self._raw:
            return self._raw.pop(i)
        raw = decode_record(self.records[i], self.memory, self.cfg)
        if not self.use_masks:
            raw.mask = None
        return raw

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
        assert self.settings is not None, "CaseStore.settings must be set before preparing cases"
        return prepare_case(raw, rec, self.settings, self.cfg)

    def get(self, i: int) -> Prepared:
        """Prepared case ``i`` (cached, or the last volume kept for its consecutive slices)."""
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
