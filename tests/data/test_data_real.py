"""The shared real datasets load with the documented layouts, splits and mask values (MEDSEG_DATA)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data import AugmentConfig, DataConfig, build_data, open_cases
from medseg.errors import DataError

pytestmark = pytest.mark.data
NOAUG = AugmentConfig(enabled=False)


def _check_binary_case(case, channels):
    assert case["image"].ndim == 3 and case["image"].shape[0] == channels
    assert case["mask"].shape == case["image"].shape[1:]
    assert set(case["mask"].unique().tolist()) <= {0, 1}
    assert case["display"].shape == (*case["mask"].shape, 3)


def test_ph2(real_data):
    data = build_data(DataConfig(root=real_data("ph2"), size=(96, 128)), NOAUG, seed=0)
    assert data.num_classes == 2 and data.in_channels == 3
    assert len(data.train) + len(data.val) + len(data.test) == 64 and len(data.val) > 0
    s = data.train[0]
    assert s["image"].shape == (3, 96, 128) and s["mask"].sum() > 0
    _check_binary_case(data.val[0], 3)
    assert 550 <= data.val[0]["image"].shape[1] <= 580


def test_drive_fov_and_official_split(real_data):
    data = build_data(DataConfig(root=real_data("drive"), size=(64, 64), resize_policy="crop"), NOAUG, seed=0)
    assert sorted(data.test.ids) == [f"{k:02d}_test" for k in range(1, 21)]
    assert sorted(data.train.ids + data.val.ids) == [f"{k}_training" for k in range(21, 41)]
    case = data.test[0]
    _check_binary_case(case, 3)
    assert case["image"].shape[1:] == (584, 565)
    roi = case["roi"].numpy()
    assert 0.6 < roi.mean() < 0.8  # the circular field of view
    m = case["mask"].numpy()
    assert m[~roi].sum() < 0.01 * m.sum()  # (almost) no vessel outside the FOV
    frac = case["mask"].numpy()[roi].mean()
    assert 0.06 < frac < 0.2


def test_acdc_slices_and_volumes(real_data):
    data = build_data(DataConfig(root=real_data("acdc"), size=(64, 64)), NOAUG, seed=0)
    assert data.num_classes == 4 and data.in_channels == 1 and data.volumetric
    assert len(data.train) + len(data.val) == 208 and len(data.test) == 20
    patients = lambda ids: {i.split("_")[0] for i in ids}  # noqa: E731
    assert not patients(data.train.ids) & patients(data.val.ids)
    case = data.test[0]
    assert case["image"].ndim == 4 and case["image"].shape[1] == 1
    assert case["mask"].shape == (case["image"].shape[0], *case["image"].shape[2:])
    assert set(case["mask"].unique().tolist()) == {0, 1, 2, 3}
    assert data.train[0]["image"].shape == (1, 64, 64)


def test_busi_with_empty_masks(real_data):
    data = build_data(DataConfig(root=real_data("busi"), size=(64, 64)), NOAUG, seed=0)
    assert len(data.train) + len(data.val) == 60 and data.in_channels == 3
    store = data.store
    normal = [store.get(i) for i, r in enumerate(store.records) if r.id.startswith("normal")]
    assert len(normal) == 10 and all(p.mask.sum() == 0 for p in normal)
    assert all(store.get(i).mask.sum() > 0 for i, r in enumerate(store.records) if r.id.startswith("benign"))


def test_isbi_em_grey_and_inverted_mapping(real_data):
    root = real_data("isbi2012-em")
    data = build_data(DataConfig(root=root, size=(64, 64), resize_policy="crop"), NOAUG, seed=0)
    assert data.in_channels == 1 and len(data.train) + len(data.val) == 30
    assert data.train[0]["image"].shape == (1, 64, 64)
    # membrane as the foreground class: 0 -> 1, 255 -> 0
    cases = open_cases(root, cfg=DataConfig(root=root, mask_values={0: 1, 255: 0}))
    frac = float(cases[0]["mask"].float().mean())
    assert 0.15 < frac < 0.3


def test_kvasir_needs_a_threshold(real_data):
    root = real_data("kvasir-seg-mini")
    with pytest.raises(DataError, match="mask_threshold"):
        build_data(DataConfig(root=root), NOAUG, seed=0)
    data = build_data(DataConfig(root=root, mask_threshold=128, size=(64, 64)), NOAUG, seed=0)
    assert data.num_classes == 2
    for c in open_cases(root, cfg=data.config):
        _check_binary_case(c, 3)
        assert 0.02 < float(c["mask"].float().mean()) < 0.6


def test_ham10000_jpg(real_data):
    cases = open_cases(real_data("ham10000-mini"))
    assert len(cases) == 5
    _check_binary_case(cases[0], 3)
    assert cases[0]["image"].shape[1:] == (450, 600)
    assert np.asarray(cases[0]["display"]).mean() > 50
