"""Patch size, network depth and batch size fitted to a CPU time budget.

The rules, in the order they are applied (nnU-Net's planner, Isensee et al., Nature Methods
2021, with its GPU-memory target replaced by the CPU step-time model of :mod:`medseg.plan.cost`):

1. The patch starts as the median case shape at the target spacing (the whole image when it
   fits), rounded up per axis to what the network's strides need.
2. The network topology comes from :func:`medseg.models.unet3d.plan_topology` for that patch and
   spacing (bottleneck of 4-8 voxels per pooled axis).
3. While two samples of the patch take longer than one step may (``max_step_seconds``), the axis
   whose patch is largest relative to the median shape shrinks by its stride multiple.
4. The batch is the most samples one step may hold, at least 2 (nnU-Net's minimum), at most
   ``MAX_BATCH`` and at most 5 % of the data set's voxels per step (nnU-Net's cap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medseg.models.unet3d import plan_topology
from medseg.plan.cost import CPU_TRAIN_FWD_FLOPS

MIN_BATCH = 2
MAX_BATCH = 32
DATASET_FRACTION = 0.05  # nnU-Net: one batch holds at most 5 % of the data set's voxels
MIN_PATCH = 16  # no axis of a planned patch is shrunk below this (voxels)


@dataclass
class PatchPlan:
    """A fitted patch: size per axis, topology, batch size and the predicted step time."""

    patch: list[int]
    kernels: list[list[int]]
    strides: list[list[int]]
    batch: int
    step_seconds: float

    @property
    def multiples(self) -> list[int]:
        """Per axis, the product of the strides: patch sizes must be divisible by it."""
        return [math.prod(s[a] for s in self.strides) for a in range(len(self.patch))]

    @property
    def uniform_depth(self) -> int:
        """Stages that halve every axis (the depth of a U-Net that pools all axes together)."""
        return sum(1 for s in self.strides[1:] if all(v == 2 for v in s))


def _round_up(size: Sequence[int], multiples: Sequence[int]) -> list[int]:
    return [int(math.ceil(s / m) * m) for s, m in zip(size, multiples)]


def _topology(patch: Sequence[int], spacing: Sequence[float]) -> tuple[list[int], list, list]:
    """The patch rounded up to the strides its own topology needs, and that topology."""
    kernels, strides = plan_topology(patch, spacing)
    multiples = [math.prod(s[a] for s in strides) for a in range(len(patch))]
    return _round_up(patch, multiples), kernels, strides


def fit_patch(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    flops_per_voxel: Callable[[list[list[int]]], float],
    max_step: float,
    dataset_voxels: float,
) -> PatchPlan:
    """Fit patch, topology and batch (rules in the module docstring).

    ``flops_per_voxel(strides)`` gives the network's forward FLOPs per voxel for a topology;
    ``max_step`` is the longest step allowed (seconds); ``dataset_voxels`` the data set's voxels
    at the target spacing (for the 5 % cap).
    """
    median = [max(1.0, float(s)) for s in median_shape]
    patch, kernels, strides = _topology([max(MIN_PATCH, round(s)) for s in median], spacing)
    stuck: set[int] = set()  # axes that cannot shrink further
    while True:
        sample = flops_per_voxel(strides) * math.prod(patch) / CPU_TRAIN_FWD_FLOPS
        movable = [a for a in range(len(patch)) if a not in stuck and patch[a] > MIN_PATCH]
        if MIN_BATCH * sample <= max_step or not movable:
            break  # fits, or every axis is at its minimum (the plan then reports the slower step)
        axis = max(movable, key=lambda a: patch[a] / median[a])
        multiple = math.prod(s[axis] for s in strides)
        shrunk = list(patch)
        shrunk[axis] = max(MIN_PATCH, patch[axis] - multiple)
        candidate, k, st = _topology(shrunk, spacing)
        if candidate[axis] >= patch[axis]:
            stuck.add(axis)
            continue
        patch, kernels, strides = candidate, k, st
    batch = fit_batch(sample, max_step, math.prod(patch), dataset_voxels)
    return PatchPlan(patch, kernels, strides, batch, batch * sample)


def fit_batch(sample_seconds: float, max_step: float, patch_voxels: float, dataset_voxels: float) -> int:
    """The largest batch whose step fits ``max_step``, within [MIN_BATCH, MAX_BATCH] and the 5 % cap."""
    by_time = int(max_step / sample_seconds + 1e-9) if sample_seconds > 0 else MAX_BATCH
    by_data = int(DATASET_FRACTION * dataset_voxels // max(1.0, patch_voxels))
    return max(MIN_BATCH, min(MAX_BATCH, by_time, by_data))
