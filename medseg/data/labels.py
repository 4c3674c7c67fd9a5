"""Label mapping: raw mask values -> class indices, and the names of the classes.

Masks on disk hold raw values (0/255 PNGs, 0..K label volumes, JPEG-noisy greys). One mapping
per dataset, decided once (:func:`auto_mapping`, or ``data.mask_values`` / ``data.mask_threshold``
from the config), turns them into uint8 class indices; a value outside it is an error naming the
file, never a silent class. ``255`` (:data:`IGNORE`) marks pixels excluded from loss and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2  # OpenCV (installed with albumentations): fast histogram and lookup table for 8-bit masks
import numpy as np

from medseg.constants import IGNORE_INDEX
from medseg.data.config import DataConfig
from medseg.data.synthetic import class_names as synthetic_class_names
from medseg.errors import DataError

IGNORE = IGNORE_INDEX  # the data layer's name for it
NOISE_BAND = 64  # lossy binary masks: values within this of 0 or of 255
LOSSY_MASK_THRESHOLD = 128.0  # the data.mask_threshold that maps such masks to background / foreground


def _single_channel(mask: np.ndarray) -> np.ndarray:
    """A mask of any shape as a 2-D (one-channel) image for OpenCV, which reads the last axis of a
    3-D array as channels (at most 128 in OpenCV 5: a stack of slices 216 wide would be refused)."""
    return np.ascontiguousarray(mask).reshape(mask.shape[0], -1)


def values_present(mask: np.ndarray) -> set[int]:
    """Distinct values of a label array (fast histogram for 8-bit masks)."""
    if mask.dtype == np.uint8:
        hist = cv2.calcHist([_single_channel(mask)], [0], None, [256], [0, 256])
        return {int(v) for v in np.flatnonzero(hist.ravel())}
    if mask.dtype == bool:
        return {int(v) for v in np.unique(mask)}
    if np.issubdtype(mask.dtype, np.floating):
        return {int(v) for v in np.unique(np.rint(mask))}
    return {int(v) for v in np.unique(mask)}


def lossy_binary_counts(values: Iterable[int]) -> tuple[int, int, int] | None:
    """``(near 0, near 255, between)`` counts of distinct mask values that look like a binary mask
    saved lossily (JPEG), else None.

    Such masks hold values near 0 and near 255 (JPEG noise around both) that no class mapping
    names. The rule: more than two 8-bit values, some below ``NOISE_BAND`` and some above
    255 - ``NOISE_BAND``, and at most a quarter of the distinct values in between (the edges'
    ringing); grey-level coded classes (e.g. 0, 85, 170, 255) do not pass it."""
    vals = sorted(int(v) for v in values)
    if len(vals) <= 2 or vals[0] < 0 or vals[-1] > 255:
        return None
    low = sum(v < NOISE_BAND for v in vals)
    high = sum(v > 255 - NOISE_BAND for v in vals)
    middle = len(vals) - low - high
    if not low or not high or 4 * middle > len(vals):
        return None
    return low, high, middle


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
        f"data.mask_threshold: {LOSSY_MASK_THRESHOLD:g} (values look like JPEG noise)"
        if lossy_binary_counts(values) is not None
        else "data.mask_values, e.g. {" + ", ".join(f"{v}: {i}" for i, v in enumerate(shown[:4])) + "}"
    )
    odd = [v for v in shown if v not in (0, 255)]
    if first_seen and odd and odd[0] in first_seen:
        where = f"{first_seen[odd[0]]}: value {odd[0]};"
    else:
        where += ":"
    raise DataError(f"{where} mask values {{{shown_s}}} have no default class mapping; set {hint}")


def _fmt_mapping(m: Mapping[int, int]) -> str:
    items = list(m.items())
    s = ", ".join(f"{k}: {v}" for k, v in items[:8])
    return "{" + s + (", ..." if len(items) > 8 else "") + "}"


def _unmapped_error(path: str, bad: list[int], mapping: Mapping[int, int]) -> DataError:
    return DataError(
        f"{path}: mask values {bad[:8]} are not in the class mapping "
        f"{_fmt_mapping(mapping)} (set data.mask_values or data.mask_threshold)"
    )


def _lookup(raw: np.ndarray, mapping: Mapping[int, int], path: str) -> np.ndarray:
    """Apply ``mapping`` to an integer array (a 256-entry lookup table for 8-bit masks)."""
    if raw.dtype == np.uint8:
        bad = sorted(values_present(raw) - set(mapping))
        if bad:
            raise _unmapped_error(path, bad, mapping)
        lut = np.zeros(256, np.uint8)
        for k, v in mapping.items():
            if 0 <= k < 256:
                lut[k] = v
        return cv2.LUT(_single_channel(raw), lut).reshape(raw.shape)
    vals, inv = np.unique(raw, return_inverse=True)
    bad = [int(v) for v in vals if int(v) not in mapping]
    if bad:
        raise _unmapped_error(path, bad, mapping)
    return np.array([mapping[int(v)] for v in vals], np.int16)[inv.reshape(raw.shape)]


def map_mask(
    raw: np.ndarray,
    mapping: Mapping[int, int] | None,
    threshold: float | None,
    num_classes: int,
    path: str,
) -> np.ndarray:
    """Raw mask values -> uint8 class indices; values outside the mapping are an error.

    With a ``threshold`` the mask is binarised (``raw >= threshold`` -> 1) and ``mapping`` is unused.
    """
    if threshold is not None:
        return (raw >= threshold).astype(np.uint8)
    if np.issubdtype(raw.dtype, np.floating):
        r = np.rint(raw)
        if not np.array_equal(r, raw):
            raise DataError(
                f"{path}: mask holds non-integer values (e.g. {raw[r != raw].flat[0]:g}); "
                f"set data.mask_threshold to binarise it"
            )
        raw = r.astype(np.int64)
    out = _lookup(raw, mapping or {}, path).astype(np.uint8)
    over = (out != IGNORE) & (out >= num_classes)
    if over.any():
        raise DataError(
            f"{path}: mask class {int(out[over].max())} is outside 0..{num_classes - 1} "
            f"(data.num_classes = {num_classes})"
        )
    return out


def _names_from_dataset_json(path: Path) -> list[str] | None:
    try:
        labels = json.loads(path.read_text()).get("labels", {})
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot parse ({e})") from None
    pairs = []
    for k, v in labels.items():  # MSD: {"0": "background"}; nnU-Net v2: {"background": 0}
        if str(k).isdigit():
            pairs.append((int(k), str(v)))
        elif isinstance(v, int):
            pairs.append((v, str(k)))
    return [n for _, n in sorted(pairs)] if pairs else None


def class_names_from_root(root: Path | None) -> list[str] | None:
    """Class names a dataset folder declares: ``classes.txt`` (one a line) or MSD/nnU-Net ``dataset.json``."""
    if root is None or not root.is_dir():
        return None
    if (root / "classes.txt").is_file():
        names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()]
        return names or None
    if (root / "dataset.json").is_file():
        return _names_from_dataset_json(root / "dataset.json")
    return None


def memory_names(cfg: DataConfig) -> list[str]:
    """Class names of the built-in synthetic phantoms of ``cfg``."""
    return synthetic_class_names(cfg.synthetic.kind)


def resolve_class_names(cfg: DataConfig, n: int, found: list[str] | None) -> list[str]:
    """The config's names, else the dataset's when there are ``n`` of them, else generic ones."""
    if cfg.class_names is not None:
        return list(cfg.class_names)
    if found is not None and len(found) == n:
        return found
    if n == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class{k}" for k in range(1, n)]
