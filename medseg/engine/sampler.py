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
