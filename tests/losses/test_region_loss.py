"""Region-based losses: label maps in, one sigmoid channel per region, Dice + BCE per region,
checked against a plain numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.losses import RegionTargets, build_loss

BRATS = ((1, 2, 3), (2, 3), (3,))


def _numpy_dice_bce(z: np.ndarray, labels: np.ndarray, regions, ignore: int | None, smooth: float = 1.0):
    """Mean-over-regions soft Dice loss (sums over the batch) + mean BCE over the valid entries."""
    p = 1.0 / (1.0 + np.exp(-z))
    valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    dice, bce_sum, n = [], 0.0, 0
    for r, region in enumerate(regions):
        g = np.isin(labels, region) & valid
        pr = p[:, r]
        tp = (pr * g).sum()
        dice.append(1 - (2 * tp + smooth) / ((pr * valid).sum() + g.sum() + smooth))
        bce = -(g * np.log(pr) + (1 - g) * np.log(1 - pr))
        bce_sum += bce[valid].sum()
        n += valid.sum()
    return bce_sum / n + np.mean(dice)


@pytest.mark.parametrize("ignore", [None, 255])
def test_dice_ce_on_regions_matches_numpy(ignore):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(2, 5, 6))
    if ignore is not None:
        labels[0, 0, :3] = ignore
    z = rng.normal(size=(2, 3, 5, 6))
    loss = build_loss("dice_ce", mode="multilabel", regions=BRATS, ignore_index=ignore)
    assert isinstance(loss, RegionTargets)
    got = loss(torch.tensor(z, dtype=torch.float64), torch.tensor(labels))
    assert got.item() == pytest.approx(_numpy_dice_bce(z, labels, BRATS, ignore), rel=1e-9)


def test_region_loss_gradient_flows_and_takes_region_targets_unchanged():
    labels = torch.randint(0, 4, (1, 4, 4))
    z = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = build_loss("bce_dice", mode="multilabel", regions=BRATS)
    value = loss(z, labels)
    value.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    from medseg.data.regions import region_targets

    same = loss(z.detach(), region_targets(labels, BRATS, None))
    assert same.item() == pytest.approx(value.item())


def test_region_loss_checks_channels_and_mode():
    loss = build_loss("dice_ce", mode="multilabel", regions=BRATS)
    with pytest.raises(ValueError, match="3 regions"):
        loss(torch.randn(1, 4, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="multilabel"):
        build_loss("dice_ce", mode="multiclass", regions=BRATS)


def test_deep_supervision_sees_downsampled_region_targets():
    labels = torch.randint(0, 4, (2, 8, 8))
    loss = build_loss("deep_supervision", mode="multilabel", regions=BRATS, ignore_index=255)
    z = torch.randn(2, 3, 8, 8)
    low = torch.randn(2, 3, 4, 4)
    value = loss(z, labels, aux={"deep_supervision": [low]})
    assert torch.isfinite(value)
