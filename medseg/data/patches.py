"""Random fixed-size patches of 2-D images ``[C, H, W]`` or 3-D volumes ``[C, D, H, W]`` with
foreground oversampling, as in nnU-Net's patch-based training (Isensee et al. 2021, Nat.
Methods 18:203, "Network training"; nnU-Net v2 ``DataLoader``).

Rule per batch of ``B`` samples: the first ``round(B * (1 - oversample))`` patches are placed
uniformly at random; the others (the last third for ``oversample = 1/3``) are centred on a
random voxel of a random class present in the case (background excluded), so rare structures
are seen often (a batch of one is never forced: round(2/3) = 1 random patch, as in nnU-Net). A case without foreground gives a random patch instead. Where the image is
smaller than the patch, the patch extends past its borders (by up to half the shortfall on
each side, the image then stays inside the patch); those voxels get the image ``pad_value``,
label 0 and ``roi = False``, so a loss can ignore them. Every sample draws from a generator
seeded by ``(seed, epoch, index)`` (:func:`medseg.data.transforms.sample_seed`): the result
does not depend on worker count, order or resumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.data.transforms import sample_seed

NNUNET_OVERSAMPLE = 1 / 3  # nnU-Net's oversample_foreground_percent (0.33)


@dataclass(frozen=True)
class Patch:
    """One patch: ``image`` ``[C, *size]``, ``mask`` ``[*size]`` (int64, 0 outside the image),
    ``roi`` ``[*size]`` (False outside the image), ``corner`` (its first voxel in image
    coordinates, negative when it starts before the image) and whether foreground was forced."""

    image: np.ndarray
    mask: np.ndarray
    roi: np.ndarray
    corner: tuple[int, ...]
    forced: bool


def forced_count(batch_size: int, oversample: float = NNUNET_OVERSAMPLE) -> int:
    """How many patches of a batch are centred on foreground: ``B - round(B * (1 - oversample))``."""
    return batch_size - round(batch_size * (1 - oversample))


def class_locations(mask: np.ndarray, roi: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Voxel coordinates ``[N, ndim]`` of every foreground class present in ``mask`` (inside
    ``roi`` when given); compute once per case and pass to :meth:`PatchSampler.sample`."""
    valid = mask > 0 if roi is None else (mask > 0) & roi.astype(bool)
    return {int(c): np.argwhere(valid & (mask == c)) for c in np.unique(mask[valid])}


def crop_padded(array: np.ndarray, corner: Sequence[int], size: Sequence[int], fill=0) -> np.ndarray:
    """The box ``corner .. corner + size`` of the trailing ``len(size)`` axes of ``array``;
    parts outside the array are ``fill``."""
    n = len(size)
    lead, spatial = array.shape[: array.ndim - n], array.shape[array.ndim - n :]
    out = np.full((*lead, *size), fill, dtype=array.dtype)
    src: list[Any] = [Ellipsis]
    dst: list[Any] = [Ellipsis]
    for c, s, extent in zip(corner, size, spatial):
        lo, hi = max(c, 0), min(c + s, extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - c, hi - c))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchSampler:
    """Seeded random patches of ``patch_size`` (one size per spatial axis) with nnU-Net's
    foreground oversampling over batches of ``batch_size``."""

    def __init__(
        self,
        patch_size: Sequence[int],
        batch_size: int,
        *,
        oversample: float = NNUNET_OVERSAMPLE,
        seed: int = 0,
        pad_value: float = 0.0,
    ) -> None:
        self.patch_size = tuple(int(s) for s in patch_size)
        if not self.patch_size or min(self.patch_size) < 1:
            raise ValueError(f"patch size must be positive sizes, got {tuple(patch_size)}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= oversample <= 1:
            raise ValueError(f"oversample must be in [0, 1], got {oversample}")
        self.batch_size, self.oversample = int(batch_size), float(oversample)
        self.seed, self.pad_value = int(seed), pad_value

    def is_forced(self, index: int) -> bool:
        """Whether sample ``index`` (counted over the epoch, batches back to back) is centred
        on foreground: it is among the last :func:`forced_count` of its batch."""
        return index % self.batch_size >= self.batch_size - forced_count(self.batch_size, self.oversample)

    def _bounds(self, shape: Sequence[int]) -> tuple[list[int], list[int]]:
        """Lowest and highest allowed corners per axis (nnU-Net: pad by half the shortfall)."""
        lows, highs = [], []
        for n, p in zip(shape, self.patch_size):
            need = max(p - n, 0)
            lows.append(-(need // 2))
            highs.append(n + need // 2 + need % 2 - p)
        return lows, highs

    def corner(
        self, shape: Sequence[int], rng: np.random.Generator, locations: dict[int, np.ndarray] | None
    ) -> tuple[tuple[int, ...], bool]:
        """A patch corner for an image of spatial ``shape``; centred on a random voxel of a random
        present class when ``locations`` (from :func:`class_locations`) has any; returns
        ``(corner, centred_on_foreground)``."""
        lows, highs = self._bounds(shape)
        present = sorted(c for c, where in (locations or {}).items() if len(where))
        if not present:
            return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(lows, highs)), False
        where = locations[present[int(rng.integers(len(present)))]]  # type: ignore[index]
        voxel = where[int(rng.integers(len(where)))]
        return tuple(
            int(np.clip(v - p // 2, lo, hi)) for v, p, lo, hi in zip(voxel, self.patch_size, lows, highs)
        ), True

    def sample(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        index: int,
        *,
        epoch: int = 0,
        roi: np.ndarray | None = None,
        locations: dict[int, np.ndarray] | None = None,
    ) -> Patch:
        """Patch number ``index`` of ``epoch`` from ``image`` ``[C, *spatial]`` and its label map
        ``mask`` ``[*spatial]`` (None: unlabelled, all background)."""
        n = len(self.patch_size)
        if image.ndim != n + 1:
            raise ValueError(
                f"a {n}-D patch needs an image [C, {n} spatial axes], got shape {tuple(image.shape)}"
            )
        shape = image.shape[1:]
        if mask is not None and tuple(mask.shape) != tuple(shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the image's {tuple(shape)}")
        inside = np.ones(shape, bool) if roi is None else roi.astype(bool)
        rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
        forced = self.is_forced(index) and mask is not None
        if forced and locations is None:
            locations = class_locations(mask, roi)  # type: ignore[arg-type]
        corner, centred = self.corner(shape, rng, locations if forced else None)
        labels = np.zeros(shape, np.int64) if mask is None else mask.astype(np.int64, copy=False)
        return Patch(
            image=crop_padded(image, corner, self.patch_size, self.pad_value),
            mask=crop_padded(labels, corner, self.patch_size, 0),
            roi=crop_padded(inside, corner, self.patch_size, False),
            corner=corner,
            forced=centred,
        )

    def batch(
        self,
        cases: Sequence[tuple[np.ndarray, np.ndarray | None]],
        batch_index: int,
        *,
        epoch: int = 0,
    ) -> dict[str, np.ndarray]:
        """Batch ``batch_index`` of an epoch: one patch from each ``(image, mask)`` of ``cases``
        (``batch_size`` of them), stacked: ``image`` ``[B, C, *size]``, ``mask`` and ``roi``
        ``[B, *size]``, ``forced`` ``[B]``; the last :func:`forced_count` are foreground-centred."""
        if len(cases) != self.batch_size:
            raise ValueError(f"a batch takes {self.batch_size} cases, got {len(cases)}")
        first = batch_index * self.batch_size
        patches = [self.sample(img, m, first + k, epoch=epoch) for k, (img, m) in enumerate(cases)]
        return {
            "image": np.stack([p.image for p in patches]),
            "mask": np.stack([p.mask for p in patches]),
            "roi": np.stack([p.roi for p in patches]),
            "forced": np.array([p.forced for p in patches]),
        }
