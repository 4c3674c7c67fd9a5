"""Datasets: augmented 2D training samples and whole cases for validation, testing and prediction.

:class:`TrainDataset` yields fixed-size, augmented 2D samples (volumes are trained slice-wise);
:class:`CaseDataset` yields whole cases at native resolution (volumes as 3D). Both read through
one shared :class:`~medseg.data.case_store.CaseStore`; :func:`~medseg.data.build.build_data`
returns them in a :class:`DataBundle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data import edges
from medseg.data.case_store import CaseStore
from medseg.data.config import AugmentConfig, DataConfig
from medseg.data.intensity import display_rgb
from medseg.data.patch_dataset import PatchDataset
from medseg.data.transforms import TrainTransform, sample_seed


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

    def _slice(self, k: int):
        """Image, mask and ROI (uint8 or None) of item ``k``: a 2D case or one slice of a volume."""
        i, z = self.items[k]
        prep = self.store.get(i)
        image = prep.image if z is None else prep.image[z]
        mask = (
            np.zeros(image.shape[:2], np.uint8)
            if prep.mask is None
            else (prep.mask if z is None else prep.mask[z])
        )
        roi = None if prep.roi is None else (prep.roi if z is None else prep.roi[z]).astype(np.uint8)
        return prep, image, mask, roi

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = index % len(self.items)
        prep, image, mask, roi = self._slice(k)
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
            out.update(self._extra_targets(np.where(roi > 0, mask, 0).astype(np.int64)))
        return out

    def _extra_targets(self, mask: np.ndarray) -> dict[str, torch.Tensor]:
        """U-Net weight map / edge target of the augmented mask (pixels outside the ROI as background)."""
        out = {}
        if "weight_map" in self.extra_targets:
            w = edges.unet_weight_map(mask, **self.target_options.get("weight_map", {}))
            out["weight_map"] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        if "edge" in self.extra_targets:
            e = edges.edge_target(mask, **self.target_options.get("edge", {}))
            out["edge"] = torch.from_numpy(np.asarray(e, dtype=np.float32))
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

    train: TrainDataset | PatchDataset  # PatchDataset: 3-D patch training (data.patch_size)
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
