"""Region targets and the region -> label conversion (nnU-Net's region-based training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.regions import (
    default_regions,
    parse_regions,
    region_labels,
    region_masks,
    region_targets,
    regions_to_labels,
)
from medseg.errors import ConfigError

BRATS = ((1, 2, 3), (2, 3), (3,))


def test_region_targets_match_a_hand_built_example():
    labels = torch.tensor([[[0, 1, 2], [3, 255, 1]]])  # [B=1, 2, 3]
    got = region_targets(labels, BRATS, ignore_index=255)
    ii = 255.0
    want = torch.tensor(
        [
            [[[0, 1, 1], [1, ii, 1]], [[0, 0, 1], [1, ii, 0]], [[0, 0, 0], [1, ii, 0]]],
        ]
    )
    assert got.shape == (1, 3, 2, 3) and got.dtype == torch.float32
    assert torch.equal(got, want)


def test_region_targets_without_ignore_index_treat_255_as_a_plain_label():
    labels = torch.tensor([[255, 3]])
    got = region_targets(labels, ((3,),), ignore_index=None)
    assert got.tolist() == [[[0.0, 1.0]]]


def test_region_targets_refuse_float_labels():
    with pytest.raises(TypeError):
        region_targets(torch.zeros(1, 2, 2), BRATS)


def test_nested_regions_round_trip_exactly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(7, 9)).astype(np.uint8)
    masks = np.stack(region_masks(labels, BRATS))
    assert np.array_equal(regions_to_labels(masks, BRATS), labels)


def test_regions_to_labels_later_regions_overwrite():
    # whole says 1 everywhere, core only on the right half, enhancing one pixel: the smaller,
    # later regions paint over the larger ones (nnU-Net's regions_class_order)
    whole = np.ones((2, 4), bool)
    core = np.zeros((2, 4), bool)
    core[:, 2:] = True
    enh = np.zeros((2, 4), bool)
    enh[0, 0] = True  # outside core: still painted, later wins
    got = regions_to_labels(np.stack([whole, core, enh]), BRATS)
    assert got.tolist() == [[3, 1, 2, 2], [1, 1, 2, 2]]


def test_regions_to_labels_channel_axis_and_torch_input():
    masks = torch.zeros(4, 4, 3, dtype=torch.bool)
    masks[1, 1, 0] = True
    masks[1, 1, 2] = True
    assert regions_to_labels(masks, BRATS, axis=-1)[1, 1] == 3


def test_region_labels_are_each_regions_own_label():
    assert region_labels(BRATS) == (1, 2, 3)
    assert region_labels(((1,), (2,))) == (1, 2)
    assert region_labels(((1, 2), (2, 3))) == (1, 2)
    with pytest.raises(ConfigError, match="covered by the regions after it"):
        region_labels(((3,), (1, 2, 3)))


def test_parse_regions_checks_labels_against_the_dataset():
    names, sets = parse_regions({"whole": [3, 1, 2], "core": [2, 3], "enh": [3]}, num_classes=4)
    assert names == ("whole", "core", "enh") and sets == BRATS
    with pytest.raises(ConfigError, match="label 4"):
        parse_regions({"x": [4]}, num_classes=4)
    with pytest.raises(ConfigError, match="background"):
        parse_regions({"x": [0, 1]}, num_classes=4)
    with pytest.raises(ConfigError, match="same labels"):
        parse_regions({"a": [1], "b": [1]}, num_classes=4)
    with pytest.raises(ConfigError, match="at least one"):
        parse_regions({"a": []}, num_classes=4)


def test_default_regions_one_per_foreground_class():
    assert default_regions(4) == (("class1", "class2", "class3"), ((1,), (2,), (3,)))
