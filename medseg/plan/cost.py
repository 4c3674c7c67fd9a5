"""A CPU step-time model, used to fit patch and batch size to a training-time budget.

The rule (for CPU training; a GPU plan would fit memory instead, as nnU-Net does):

    step seconds = batch x forward FLOPs(patch) / CPU_TRAIN_FWD_FLOPS

``CPU_TRAIN_FWD_FLOPS`` is the forward FLOPs per second a training step (forward, Dice+CE,
backward, AdamW) processes on the reference machine: medseg's U-Net trains 6.19 images/s at
256 x 256 with 6.1 forward GFLOP per image on 2 cores (docs/bench/unet.md, quiet-machine table),
i.e. 38 GFLOP/s. Forward FLOPs are counted exactly with ``torch.utils.flop_counter`` on the
planned network and scale linearly with the voxels of a fully-convolutional network. A plan asks
for ``MIN_STEPS[dims]`` steps within the budget, so one step may take at most
``budget / MIN_STEPS[dims]``.

2-D plans ask for 4000 steps: their U-Net has half nnU-Net's widths (16 -> 256, a quarter of the
FLOPs), and 4000 steps keep the patch and batch that the 32 -> 512 network was fitted with at 1000
steps. At equal patch, batch and CPU time the narrow network fitted 3.4-3.6x the steps and
scored higher on ACDC and DRIVE (20 of 20 test cases each) and tied on PH2 (docs/bench/recipe.md,
"network width"). 3-D plans keep nnU-Net's widths and 1000 steps (not measured).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.models import build_model

CPU_TRAIN_FWD_FLOPS = 38e9
MIN_STEPS = {"2d": 4000, "3d": 1000}


def forward_flops_per_voxel(
    model_name: str, options: dict[str, Any], in_channels: int, classes: int
) -> float:
    """Forward FLOPs per input voxel of ``model_name`` with ``options`` (2 FLOPs per multiply-add),
    counted on the smallest input the network accepts x 2 per axis. The network is built on the
    ``meta`` device (shapes only: no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = build_model(model_name, in_channels=in_channels, num_classes=classes, **options)
        multiples = getattr(model, "input_multiples", None)
        if multiples is None:
            multiples = (model.input_multiple,) * (3 if getattr(model, "dims", 2) == 3 else 2)
        shape = [2 * int(m) for m in multiples]
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, *shape))
    return counter.get_total_flops() / math.prod(shape)


def step_seconds(flops_per_voxel: float, patch: Sequence[int], batch: int) -> float:
    """Predicted CPU seconds of one training step (see the module docstring)."""
    return batch * math.prod(patch) * flops_per_voxel / CPU_TRAIN_FWD_FLOPS


def max_step_seconds(budget_minutes: float, dims: str) -> float:
    """The longest step that still leaves ``MIN_STEPS[dims]`` steps in the budget."""
    return budget_minutes * 60.0 / MIN_STEPS[dims]
