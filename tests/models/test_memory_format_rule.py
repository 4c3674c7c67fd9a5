"""The memory format follows the input size where measured (models/base.py: CHANNELS_LAST_MIN_PIXELS,
from bench/speed.py, docs/bench/speed.md): the rule picks the faster format of the table, training
and inference agree, and inputs are converted to the format the weights are in."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model
from medseg.models.base import (
    CHANNELS_LAST_MIN_PIXELS,
    format_input,
    memory_format_for_size,
    resolve_memory_format,
    to_preferred_format,
)

CL, NCHW = torch.channels_last, torch.contiguous_format

# (registry name, options, side) -> the format measured faster in docs/bench/speed.md (training and
# inference agreeing, or the training step deciding where they differ)
MEASURED = [
    ("unet", {"depth": 2, "base_width": 4}, 64, CL),
    ("unet", {"depth": 2, "base_width": 4}, 128, CL),
    ("unet", {"depth": 2, "base_width": 4}, 256, CL),
    ("deeplabv3plus", {"backbone": "resnet18"}, 64, NCHW),
    ("deeplabv3plus", {"backbone": "resnet18"}, 128, NCHW),
    ("deeplabv3plus", {"backbone": "resnet18"}, 256, NCHW),
    ("deeplabv3plus", {"backbone": "resnet18"}, 512, CL),  # unmeasured: the class's preference
    ("unet_resnet", {"backbone": "resnet18"}, 64, NCHW),
    ("unet_resnet", {"backbone": "resnet18"}, 128, NCHW),
    ("unet_resnet", {"backbone": "resnet18"}, 256, CL),
]


@pytest.mark.parametrize("name, options, side, expected", MEASURED)
def test_rule_picks_the_measured_faster_format(name, options, side, expected):
    model = build_model(name, 3, 2, **options)
    assert memory_format_for_size(model, (side, side)) == expected


def test_thresholds_are_between_the_measured_sizes():
    for name, threshold in CHANNELS_LAST_MIN_PIXELS.items():
        assert 64 * 64 < threshold <= 256 * 256 + 1, name


@pytest.mark.parametrize("side, expected", [(64, NCHW), (256, CL)])
def test_weights_and_inputs_follow_the_rule(side, expected):
    model = build_model("unet_resnet", 3, 2, backbone="resnet18")
    to_preferred_format(model, "auto", size=(side, side))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=expected)
    assert resolve_memory_format(model) == expected  # what format_input and the trainer use
    x = format_input(torch.randn(1, 3, side, side), model)
    assert x.is_contiguous(memory_format=expected)


def test_forced_settings_and_3d_sizes_ignore_the_rule():
    model = build_model("unet_resnet", 3, 2, backbone="resnet18")
    to_preferred_format(model, True, size=(64, 64))  # forced: channels_last even at 64 x 64
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=CL)
    assert memory_format_for_size(model, (8, 64, 64)) == resolve_memory_format(model)
    assert memory_format_for_size(model, None) == resolve_memory_format(model)
    befunet = build_model("befunet_small", 3, 2)
    assert memory_format_for_size(befunet, (224, 224)) == NCHW  # its own preference, not the rule's
