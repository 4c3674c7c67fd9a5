"""The training sampler: a per-epoch permutation that depends only on (seed, epoch)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A permutation of the dataset that depends only on (seed, epoch), sharded by rank.

    Because the order is a pure function of the epoch, a resumed run sees exactly the
    batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank has equal work
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


class BatchOrderSampler(Sampler[int]):
    """Items ``0 .. n-1`` in order, whole batches dealt to ranks in turn (rank ``r`` gets
    global batches ``r, r + world, ...``): for datasets whose items depend on their position
    in a batch (3-D patches, :class:`medseg.data.patch_dataset.PatchDataset`, shuffle by epoch
    themselves). Ranks get equal work: the last batches wrap around to the first items."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # the dataset reshuffles itself per epoch; the order stays

    def _batches(self) -> int:
        per_rank = math.ceil(math.ceil(self.n / self.batch_size) / self.world)
        return per_rank

    def __iter__(self) -> Iterator[int]:
        for j in range(self._batches()):
            g = j * self.world + self.rank
            for k in range(self.batch_size):
                item = g * self.batch_size + k
                if item >= self.n and self.world == 1:
                    return
                yield item % self.n

    def __len__(self) -> int:
        if self.world == 1:
            return self.n
        return self._batches() * self.batch_size
