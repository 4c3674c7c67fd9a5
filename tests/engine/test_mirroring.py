"""Test-time mirroring flips the axes the training augmentation mirrored, and only those."""

from __future__ import annotations

import pytest
import torch

from medseg.config import load_config
from medseg.data.config import AugmentConfig
from medseg.engine.mirroring import trained_mirror_axes, tta_axes
from medseg.engine.predict import predict_case

SIZE = 24
TINY = [
    "data.format=synthetic",
    f"data.size=[{SIZE},{SIZE}]",
    "model.options={depth: 2, base_width: 4}",
]


@pytest.mark.parametrize(
    ("aug", "n", "axes"),
    [
        ({}, 2, (1,)),  # the default: horizontal flips only -> W
        ({}, 3, (2,)),
        ({"vflip": 0.5}, 2, (0, 1)),
        ({"hflip": 0.0, "vflip": 0.5}, 2, (0,)),
        ({"rot90": 0.5}, 2, (0, 1)),  # a flip and quarter turns reach every in-plane orientation
        ({"hflip": 0.0, "rot90": 0.5}, 2, ()),  # rotations alone mirror nothing
        ({"dflip": 0.5}, 3, (0, 2)),
        ({"dflip": 0.5}, 2, (1,)),  # no depth axis in 2-D
        ({"preset": "nnunet"}, 2, (0, 1)),
        ({"preset": "nnunet"}, 3, (0, 1, 2)),
        ({"enabled": False}, 2, ()),
    ],
)
def test_trained_mirror_axes_follow_the_augmentation(aug, n, axes):
    assert trained_mirror_axes(AugmentConfig(**aug), n) == axes


def test_without_trained_mirroring_tta_mirrors_every_axis():
    cfg = load_config(None, TINY + ["augment.enabled=false"])
    assert tta_axes(cfg, 2) == (0, 1) and tta_axes(cfg, 3) == (0, 1, 2)


def _model() -> torch.nn.Module:
    """Random, not mirror-equivariant: every flip changes its output."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 5, padding=2), torch.nn.Conv2d(2, 2, 3, padding=1)
    ).eval()


def _mirrored_mean(model, cfg, image: torch.Tensor, dims_list) -> torch.Tensor:
    """Reference: predict each flipped image without TTA, flip back, average."""
    outs = []
    for dims in dims_list:
        _, p = predict_case(
            model, {"image": image.flip(dims)}, cfg, torch.device("cpu"), tta=False, crf=False
        )
        outs.append(p.flip(dims))
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize(
    ("sets", "dims_list"),
    [
        ([], [(), (-1,)]),  # default augmentation: identity and the horizontal mirror
        (["augment.vflip=0.5"], [(), (-1,), (-2,), (-2, -1)]),
    ],
)
def test_tta_averages_exactly_the_trained_mirrors(sets, dims_list):
    cfg = load_config(None, TINY + sets)
    model = _model()
    image = torch.rand(1, SIZE, SIZE)
    _, proba = predict_case(model, {"image": image}, cfg, torch.device("cpu"), tta=True, crf=False)
    assert torch.allclose(proba, _mirrored_mean(model, cfg, image, dims_list), atol=1e-6)
    every = _mirrored_mean(model, cfg, image, [(), (-1,), (-2,), (-2, -1)])
    assert torch.allclose(proba, every, atol=1e-6) == (len(dims_list) == 4)
