"""3-D patch training samples: random patches of whole volumes with foreground oversampling
(:mod:`medseg.data.patches`), augmented (:mod:`medseg.data.transforms3d`) and normalised per
volume, as in nnU-Net's 3-D training (Isensee et al., Nature Methods 18:203, 2021).

Item ``i`` of an epoch is a patch of volume ``order[i mod n]`` (a seeded permutation of the
training volumes per pass), centred on foreground when ``i`` is among the last third of its
batch (:meth:`PatchSampler.is_forced`); so batches must be read in order, which
:class:`medseg.engine.sampler.BatchOrderSampler` does. Everything an item draws comes from a
generator seeded by ``(seed, epoch, i)``: the result does not depend on workers or resumption.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.case_store import CaseStore
from medseg.data.config import AugmentConfig, DataConfig
from medseg.data.patches import PatchSampler, class_locations
from medseg.data.transforms import sample_seed
from medseg.data.transforms3d import Augment3D, intensity, mirror_and_rot90, spatial_patch


class PatchDataset(Dataset):
    """Augmented 3-D patches ``image [C, D, H, W]``, ``mask``/``roi`` ``[D, H, W]`` of the
    volumes ``indices`` of ``store``; ``len = volumes x data.train_repeats`` per epoch."""

    patch_batches = True  # read in batch order (foreground oversampling is per batch position)

    def __init__(
        self,
        store: CaseStore,
        indices: list[int],
        cfg: DataConfig,
        aug: AugmentConfig,
        seed: int,
        batch_size: int = 2,
    ) -> None:
        assert cfg.patch_size is not None
        self.store, self.indices, self.seed = store, list(indices), int(seed)
        self.patch_size = tuple(int(s) for s in cfg.patch_size)
        self.sampler = PatchSampler(self.patch_size, batch_size, oversample=cfg.oversample, seed=seed)
        self.aug = Augment3D.from_config(aug, self.patch_size)
        self.repeats = cfg.train_repeats
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._locations: dict[int, dict[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.indices) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def set_batch_size(self, batch_size: int) -> None:
        """The batch size the loader uses (which positions of a batch are foreground-centred)."""
        self.sampler = PatchSampler(
            self.patch_size, batch_size, oversample=self.sampler.oversample, seed=self.seed
        )

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def ids(self) -> list[str]:
        return [self.store.records[i].id for i in self.indices]

    def volume_of(self, index: int, epoch: int) -> int:
        """Store index of the volume item ``index`` of ``epoch`` is cut from."""
        n = len(self.indices)
        # 4 entropy words: never the stream of a sample_seed(seed, epoch, index) patch draw
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, index // n, 0x9A7C4])
        return self.indices[int(rng.permutation(n)[index % n])]

    def _class_locations(self, i: int, mask: np.ndarray, roi: np.ndarray | None) -> dict[int, np.ndarray]:
        if i not in self._locations:
            self._locations[i] = class_locations(mask, roi)
        return self._locations[i]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        epoch = self.epoch
        i = self.volume_of(index, epoch)
        prep = self.store.get(i)
        image = np.moveaxis(prep.image, -1, 0)  # [C, D, H, W], a view
        shape = image.shape[1:]
        mask = np.zeros(shape, np.uint8) if prep.mask is None else prep.mask
        roi = np.ones(shape, bool) if prep.roi is None else np.asarray(prep.roi, bool)
        rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
        forced = self.sampler.is_forced(index) and prep.mask is not None
        locations = self._class_locations(i, mask, prep.roi) if forced else None
        corner, centred = self.sampler.corner(shape, rng, locations)
        matrix = self.aug.draw_matrix(rng)
        img, lab, inside = spatial_patch(image, mask, roi, corner, self.patch_size, matrix, prep.lo)
        img, lab, inside = mirror_and_rot90([img, lab, inside], self.aug, rng)
        unit = intensity(prep.unit(img), self.aug, rng)
        x = (unit - prep.shift[:, None, None, None]) / prep.scale[:, None, None, None]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int64)),
            "roi": torch.from_numpy(np.ascontiguousarray(inside, dtype=bool)),
            "forced": torch.tensor(centred),
            "id": self.store.records[i].id,
        }
