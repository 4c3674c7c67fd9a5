"""Planner rules against hand computations: target spacing, patch shrinking, batch caps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.plan.config import UNET2D
from medseg.plan.cost import CPU_TRAIN_FWD_FLOPS, max_step_seconds
from medseg.plan.patch import fit_batch, fit_patch
from medseg.plan.planner import flops_2d
from medseg.plan.rules import choose_dims, downsample_limit, normalisation
from medseg.plan.spacing import anisotropy, target_spacing


def test_isotropic_target_is_the_median():
    target, axis = target_spacing([(1.0, 0.8, 0.8), (1.2, 0.7, 0.7), (3.0, 0.9, 0.9)])
    assert target == pytest.approx([1.2, 0.8, 0.8]) and axis is None


def test_thick_slices_take_the_10th_percentile():
    # z medians 10 > 3 x 1 and 10 slices x 3 < 200 voxels: the 10th percentile of
    # [5, 10, 10, 10] (linear interpolation: 5 + 0.3 x 5 = 6.5) replaces the median 10
    spacings = [(5.0, 1.0, 1.0), (10.0, 1.0, 1.0), (10.0, 1.0, 1.0), (10.0, 1.0, 1.0)]
    shapes = [(10, 200, 200)] * 4
    target, axis = target_spacing(spacings, shapes)
    assert target == pytest.approx([6.5, 1.0, 1.0]) and axis == 0


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    spacings = [(5.0, 1.0, 1.0), (10.0, 1.0, 1.0), (10.0, 1.0, 1.0)]
    target, axis = target_spacing(spacings, [(100, 100, 100)] * 3)
    assert target == pytest.approx([10.0, 1.0, 1.0]) and axis is None
    assert anisotropy(target) == pytest.approx(10.0)


def test_batch_is_capped_by_time_data_and_limits():
    assert fit_batch(0.1, 1.0, 100, 1e9) == 10  # 1 s / 0.1 s
    assert fit_batch(0.1, 1.0, 100, 4000) == 2  # 5 % of 4000 voxels = 2 patches of 100
    assert fit_batch(1.0, 0.5, 100, 1e9) == 2  # never below 2
    assert fit_batch(1e-6, 1.0, 1, 1e12) == 32  # never above 32


def test_patch_is_the_median_shape_when_it_fits():
    plan = fit_patch([64, 64], [1.0, 1.0], lambda strides: 1000.0, max_step=10.0, dataset_voxels=1e9)
    # 64 is halved while >= 8 px: 64 -> 32 -> 16 -> 8 -> 4, four halvings
    assert plan.patch == [64, 64] and plan.uniform_depth == 4
    sample = 64 * 64 * 1000.0 / CPU_TRAIN_FWD_FLOPS
    assert plan.batch == 32 and plan.step_seconds == pytest.approx(32 * sample)


def test_patch_shrinks_the_relatively_largest_axis_until_two_samples_fit():
    """Budget for 2 x 2048 voxels. Hand trace: 64x64 (multiples 16) -> axis 0 (tie, first) to
    48x64 (3 all-axis halvings: multiples 8) -> 48x56 -> 48x48 -> 40x48 = 1920 <= 2048."""
    flops = 1000.0
    max_step = 2 * 2048 * flops / CPU_TRAIN_FWD_FLOPS
    plan = fit_patch([64, 64], [1.0, 1.0], lambda strides: flops, max_step=max_step, dataset_voxels=1e9)
    assert plan.patch == [40, 48]
    assert all(p % m == 0 for p, m in zip(plan.patch, plan.multiples))
    assert plan.batch == 2 and 2 * 40 * 48 * flops / CPU_TRAIN_FWD_FLOPS <= max_step


def test_step_budget_is_budget_over_min_steps():
    assert max_step_seconds(15, "3d") == pytest.approx(15 * 60 / 1000)
    assert max_step_seconds(15, "2d") == pytest.approx(15 * 60 / 4000)


def test_dims_rules():
    assert choose_dims("auto", False, None, [100, 100], True)[0] == "2d"
    assert choose_dims("auto", True, [10.0, 1.5, 1.5], [10, 200, 200], True)[0] == "2d"
    assert choose_dims("auto", True, [1.0, 1.0, 1.0], [100, 100, 100], True)[0] == "3d"
    assert choose_dims("auto", True, None, [9, 256, 216], True)[0] == "2d"  # few slices, no spacing
    dims, why = choose_dims("auto", True, [1.0, 1.0, 1.0], [100, 100, 100], False)
    assert dims == "2d" and "slice-wise" in why
    with pytest.raises(ConfigError, match="--dims 3d: the data are 2-D images"):
        choose_dims("3d", False, None, [100, 100], True)


def test_dims_flag_forces_the_choice_and_the_reason_says_so():
    thick = ([10.0, 1.5, 1.5], [10, 200, 200])  # anisotropy 6.7 > 3: the rule says 2-D
    dims, why = choose_dims("3d", True, *thick, True)
    assert dims == "3d" and why.startswith("forced by --dims 3d (the data rule would choose 2d: median")
    assert "thick slices" in why
    iso = ([1.0, 1.0, 1.0], [100, 100, 100])  # the rule says 3-D
    dims, why = choose_dims("2d", True, *iso, True)
    assert dims == "2d" and why.startswith("forced by --dims 2d (the data rule would choose 3d")
    dims, why = choose_dims("3d", True, *iso, True)
    assert dims == "3d" and why.startswith("forced by --dims 3d (the data rule agrees")
    assert choose_dims("2d", False, None, [100, 100], True) == (
        "2d",
        "forced by --dims 2d (the data rule agrees: the data are 2-D images)",
    )
    assert "forced" not in choose_dims("auto", True, *thick, True)[1]
    with pytest.raises(ConfigError, match="--dims must be one of auto, 2d, 3d"):
        choose_dims("4d", True, *iso, True)


def test_normalisation_recognises_hounsfield_units():
    ct = {"min": -1024.0, "max": 2000.0, "p0_5": -1000.0, "p99_5": 1500.0}
    assert normalisation(ct, 1)[:2] == ("zscore", [-1000.0, 1500.0])
    mr = {"min": 0.0, "max": 1866.0, "p0_5": 0.0, "p99_5": 900.0}
    assert normalisation(mr, 1)[:2] == ("zscore", None)


def test_downsampling_is_limited_by_the_thinnest_class():
    limit, _ = downsample_limit({"background": 300.0, "vessel": 6.0})
    assert limit == pytest.approx(1.5)
    assert downsample_limit({"background": 300.0, "vessel": 2.0})[0] == 1.0
    assert math.isclose(downsample_limit(None)[0], 1.0)


@pytest.mark.parametrize("median", [(256, 216), (576, 766), (584, 565), (96, 128)])
@pytest.mark.parametrize("budget", [3, 15])
def test_narrow_2d_unet_at_4000_steps_keeps_the_patch_and_batch_of_the_wide_one_at_1000(median, budget):
    # the width ablation (docs/bench/recipe.md) compared the two networks at the wide plan's
    # patch and batch; the 2-D plan's step target keeps that patch and batch for the narrow one
    pixels = 60 * float(np.prod(median))
    wide = flops_2d(3, 2, {**UNET2D, "base_width": 32, "max_width": 512})
    old = fit_patch(median, [1.0, 1.0], wide, budget * 60 / 1000, pixels)
    new = fit_patch(median, [1.0, 1.0], flops_2d(3, 2), max_step_seconds(budget, "2d"), pixels)
    assert (UNET2D["base_width"], UNET2D["max_width"]) == (16, 256)
    assert (new.patch, new.batch) == (old.patch, old.batch)
