"""The process group under ``torchrun``: rank, world size and the few collectives the trainer
needs. Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) every call is a no-op."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


class Distributed:
    """Rank and world size from the ``torchrun`` environment; gloo on CPU, NCCL on CUDA."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (decisions such as stopping must agree)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``net`` in DistributedDataParallel when running under torchrun."""
        if not self.enabled:
            return net
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
