"""Probability maps on disk: one compressed ``.npz`` per case (format ``medseg-probabilities/1``).

Written for the out-of-fold predictions of a cross-validation (``RUN/fold_k/oof/probabilities/``)
and read back by ensembling, so both sides agree on one layout. Keys of the archive:

- ``probabilities``: float16 ``[C, *spatial]`` in the case's own grid (``[C, H, W]`` for an
  image, ``[C, D, H, W]`` for a volume), one channel per entry of ``channels``;
- ``channels``: the channel names, in channel order;
- ``kind``: ``classes`` (one channel per class, background included, summing to 1; a binary
  sigmoid output ``p`` is stored as the two channels ``[1 - p, p]``) or ``regions``
  (independent sigmoid channels);
- ``case_id``: the case the map belongs to; ``format``: ``medseg-probabilities/1``.

Labels follow as ``argmax`` over the channels for ``classes`` (ties to the lower class, so a
binary ``p = 0.5`` is background, as ``p > 0.5`` decides in :mod:`medseg.engine.predict`).
float16 keeps about three significant digits, enough to average and to take an argmax.
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
KINDS = ("classes", "regions")


@dataclass(frozen=True)
class Probabilities:
    """A case's probability map read back by :func:`load_probabilities` (float32)."""

    case_id: str
    probabilities: np.ndarray
    channels: tuple[str, ...]
    kind: str

    def labels(self) -> np.ndarray:
        """The label map: argmax over the class channels (``classes`` only)."""
        if self.kind != "classes":
            raise ValueError("labels of independent region channels are not an argmax; threshold them")
        return np.argmax(self.probabilities, axis=0).astype(
            np.uint8 if len(self.channels) < 256 else np.int32
        )


def class_channels(proba: np.ndarray, binary: bool, channel_axis: int = 0) -> np.ndarray:
    """``proba`` with channels first; a binary sigmoid map (one channel) becomes ``[1 - p, p]``."""
    p = np.moveaxis(np.asarray(proba, dtype=np.float32), channel_axis, 0)
    if binary:
        if p.shape[0] != 1:
            raise ValueError(f"a binary sigmoid map has one channel, got {p.shape[0]}")
        p = np.concatenate([1.0 - p, p])
    return p


def save_probabilities(
    path: str | Path,
    probabilities: np.ndarray,
    *,
    case_id: str,
    channels: Sequence[str],
    kind: str = "classes",
) -> Path:
    """Write ``probabilities`` (``[C, *spatial]``, channel-first) as a compressed float16 npz,
    atomically. ``channels`` names the C channels in order."""
    p = np.asarray(probabilities)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if p.ndim < 3 or p.shape[0] != len(channels):
        raise ValueError(f"expected [C={len(channels)}, *spatial] probabilities, got shape {p.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        probabilities=p.astype(np.float16),
        channels=np.asarray(list(channels), dtype=str),
        kind=np.asarray(kind),
        case_id=np.asarray(str(case_id)),
        format=np.asarray(FORMAT),
    )
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_probabilities(path: str | Path) -> Probabilities:
    """Read a map written by :func:`save_probabilities` (as float32); a file of another format
    is a :class:`DataError` naming it."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise DataError(f"{p}: not a medseg probability map (expected format {FORMAT})")
            return Probabilities(
                str(z["case_id"]),
                z["probabilities"].astype(np.float32),
                tuple(str(c) for c in z["channels"]),
                str(z["kind"]),
            )
    except FileNotFoundError:
        raise DataError(f"{p}: probability map not found") from None
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{p}: cannot read probability map ({e})") from None
