"""Per-case class probabilities on disk: one compressed ``.npz`` per case, one format for all.

``predict --save-probabilities``, the out-of-fold predictions of cross-validation and
``medseg ensemble`` all read and write this format, so probabilities from any of them can be
averaged (the nnU-Net ensembling of softmax outputs; Isensee et al., Nature Methods 2021).

File content (``np.savez_compressed``):

- ``probabilities``: float16 ``[K, *spatial]`` (``[K, H, W]`` or ``[K, D, H, W]``), class axis
  first, in the case's own (native) grid; each voxel's K values sum to 1 (up to float16
  rounding). A binary (sigmoid) model's ``[1, ...]`` map is stored as ``[1 - p, p]``, so the
  class axis always has one entry per class name.
- ``case_id``: the case id (0-d unicode array).
- ``class_names``: the K class names in class-index order.
- ``format``: ``"medseg-probabilities/1"``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_write_bytes
from medseg.errors import DataError

FORMAT = "medseg-probabilities/1"
SUFFIX = ".npz"


@dataclass
class CaseProbabilities:
    """One case's probabilities ``[K, *spatial]`` (float32 once loaded), its id and class names."""

    probs: np.ndarray
    case_id: str
    class_names: list[str]

    def labels(self) -> np.ndarray:
        """Integer labels ``[*spatial]``: the most probable class per voxel."""
        return labels_from_probabilities(self.probs)


def labels_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """``[K, *spatial]`` probabilities -> uint8 (int32 for K >= 256) labels by argmax over K."""
    labels = np.argmax(probs, axis=0)
    return labels.astype(np.uint8 if probs.shape[0] < 256 else np.int32)


def as_class_probabilities(probs: np.ndarray) -> np.ndarray:
    """A sigmoid map ``[1, ...]`` becomes ``[1 - p, p]``; a ``[K >= 2, ...]`` map is returned as is."""
    probs = np.asarray(probs)
    if probs.shape[0] == 1:
        return np.concatenate([1 - probs, probs], axis=0)
    return probs


def save_probabilities(path: str | Path, probs: np.ndarray, case_id: str, class_names: Sequence[str]) -> Path:
    """Write ``probs`` (``[K, *spatial]``, or a sigmoid ``[1, *spatial]``) atomically as float16.

    ``class_names`` must have one name per class (2 for a sigmoid map). Raises ``ValueError``
    when the shapes disagree or the values are not probabilities.
    """
    arr = as_class_probabilities(np.asarray(probs, dtype=np.float32))
    if arr.ndim not in (3, 4):
        raise ValueError(f"probabilities must be [K, H, W] or [K, D, H, W], got shape {arr.shape}")
    if arr.shape[0] != len(class_names):
        raise ValueError(f"{arr.shape[0]} probability channels but {len(class_names)} class names")
    if arr.size and (not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        raise ValueError(f"{case_id}: probabilities must be finite and within [0, 1]")
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        probabilities=arr.astype(np.float16),
        case_id=np.asarray(str(case_id)),
        class_names=np.asarray([str(n) for n in class_names]),
        format=np.asarray(FORMAT),
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_probabilities(path: str | Path) -> CaseProbabilities:
    """Read a file written by :func:`save_probabilities` (probabilities as float32).

    Raises :class:`~medseg.errors.DataError` naming the file when it is not such a file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != FORMAT:
                raise DataError(f"{path}: not a medseg probabilities file (expected format {FORMAT})")
            probs = z["probabilities"].astype(np.float32)
            case_id = str(z["case_id"])
            names = [str(n) for n in z["class_names"]]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: cannot read probabilities ({e})") from None
    if probs.shape[0] != len(names):
        raise DataError(f"{path}: {probs.shape[0]} probability channels but {len(names)} class names")
    return CaseProbabilities(probs, case_id, names)


def probability_files(folder: str | Path) -> dict[str, Path]:
    """The probability files directly in ``folder``, by file stem (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of probability files")
    return {p.name[: -len(SUFFIX)]: p for p in sorted(folder.glob(f"*{SUFFIX}")) if p.is_file()}
