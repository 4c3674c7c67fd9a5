"""Planner fixes from the robustness sweep over the shared data sets (docs/bench/plan_sweep.md):
lossy binary masks, 2-D slices mixed with volumes, and a target spacing that the written config
really applies (in-plane only for 2-D plans of volumes)."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.data import write_synthetic_dataset
from medseg.data.case_store import CaseStore
from medseg.data.discovery import discover
from medseg.data.labels import auto_mapping
from medseg.errors import ConfigError, DataError
from medseg.plan import plan_dataset
from medseg.plan.rules import mask_threshold


def test_mask_threshold_rule_accepts_jpeg_noise_only():
    noisy = [*range(0, 9), *range(247, 256)]  # Kvasir-SEG's masks: 0-8 and 247-255
    assert mask_threshold(noisy)[0] == 128.0
    assert "9 near 0 and 9 near 255 (0 between)" in mask_threshold(noisy)[1]
    assert mask_threshold([0, 3, 130, 250, 255])[0] == 128.0  # 1 of 5 in between: edge ringing
    assert mask_threshold([0, 85, 170, 255])[0] is None  # grey-coded classes: half in between
    assert mask_threshold([0, 1, 2, 3])[0] is None  # class indices: nothing near 255
    assert mask_threshold([0, 255])[0] is None  # already mapped by default
    assert mask_threshold([0, 250, 300])[0] is None  # not 8-bit


def _jpeg_noisy_masks(root):
    rng = np.random.default_rng(0)
    for p in sorted((root / "masks").iterdir()):
        m = np.asarray(Image.open(p))
        noise = rng.integers(0, 9, m.shape)
        Image.fromarray(np.where(m > 0, 255 - noise, noise).astype(np.uint8)).save(p)


def test_plan_thresholds_lossy_binary_masks_and_counts_classes_after_it(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=4, size=32, seed=0)
    truth = sum(int((np.asarray(Image.open(p)) > 0).sum()) for p in (root / "masks").iterdir())
    _jpeg_noisy_masks(root)
    plan = plan_dataset(root, budget_minutes=1)
    decisions = {d.name: d.value for d in plan.decisions}
    assert decisions["mask threshold"] == "128"
    assert plan.config["data"]["mask_threshold"] == 128.0 and "mask_values" not in plan.config["data"]
    fp = plan.fingerprint
    total = 4 * 32 * 32
    assert list(fp["class_frequency"].values())[1] == pytest.approx(truth / total)
    assert load_config(plan.config).data.mask_threshold == 128.0


def test_plan_stops_on_masks_no_rule_can_map(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=2, size=32, seed=0)
    for p in (root / "masks").iterdir():  # grey-coded values without a mapping: 0, 85, 170, 255
        m = np.asarray(Image.open(p)).copy()
        m[:4, :4], m[4:8, :4] = 85, 170
        Image.fromarray(m).save(p)
    with pytest.raises(DataError, match=r"masks/.*\.png: value 85; .*set data.mask_values"):
        plan_dataset(root)


def _h5(path, shape, seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[..., 8:24, 8:24] = 1
    with h5py.File(path, "w") as f:
        f["image"] = rng.random(shape).astype(np.float32)
        f["label"] = lab


def test_slices_mixed_with_volumes_are_planned_2d(tmp_path):
    (tmp_path / "slices").mkdir()
    (tmp_path / "volumes").mkdir()
    for k in range(3):
        _h5(tmp_path / "slices" / f"s{k}.h5", (32, 40), k)
    _h5(tmp_path / "volumes" / "v0.h5", (5, 32, 40), 9)
    plan = plan_dataset(tmp_path, budget_minutes=15)
    assert plan.dims == "2d" and plan.decisions[0].reason.startswith("2-D images and 3-D volumes together")
    assert plan.config["data"]["size"] == [32, 40]  # every slice is 32 x 40: the whole slice
    assert load_config(plan.config).data.format == "h5"
    with pytest.raises(ConfigError, match="mix 2-D images and 3-D volumes"):
        plan_dataset(tmp_path, dims="3d")


def _volumes(root, zooms_list, shape_xyz):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k, zooms in enumerate(zooms_list):
        aff = np.diag([*zooms, 1.0])
        img = np.random.default_rng(k).random(shape_xyz).astype(np.float32)
        lab = np.zeros(shape_xyz, np.uint8)
        lab[8:-8, 8:-8, :] = 1
        nib.save(nib.Nifti1Image(img, aff), str(root / "imagesTr" / f"c{k}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labelsTr" / f"c{k}.nii.gz"))
    return root


def test_2d_plan_of_volumes_resamples_in_plane_and_keeps_each_cases_slices(tmp_path):
    # in-plane 1, 2, 1.5 mm -> median 1.5; slices 8, 8, 6 mm (thick: 2-D) stay as stored
    root = _volumes(tmp_path / "v", [(1, 1, 8), (2, 2, 8), (1.5, 1.5, 6)], (40, 32, 4))
    plan = plan_dataset(root, budget_minutes=15)
    decisions = {d.name: (d.value, d.reason) for d in plan.decisions}
    assert plan.dims == "2d" and decisions["target spacing"][0] == "native x 1.5 x 1.5"
    assert plan.config["data"]["target_spacing"] == [None, 1.5, 1.5]
    cfg = load_config(plan.config)
    assert cfg.data.target_spacing == (None, 1.5, 1.5)
    recs, _, _ = discover(cfg.data, require_masks=True)
    store = CaseStore(recs, cfg.data, None)
    # case layout (slice axis S first, then A, R): 4 x 32 x 40 voxels at (z, y, x) mm, to 1.5 mm
    for i, (xy, z) in enumerate([(1.0, 8.0), (2.0, 8.0), (1.5, 6.0)]):
        raw = store.read_raw(i)
        expected = (4, round(32 * xy / 1.5), round(40 * xy / 1.5))
        assert raw.image.shape[:3] == expected and raw.mask is not None and raw.mask.shape == expected
        assert raw.spacing == pytest.approx((z, 1.5, 1.5), rel=0.03)


def test_3d_plan_writes_its_full_target_spacing(tmp_path, monkeypatch):
    import medseg.plan.planner as planner_module

    monkeypatch.setattr(planner_module, "three_d_trainable", lambda: True)
    root = _volumes(tmp_path / "v", [(1, 1, 2), (1, 1, 2), (1, 1, 1)], (24, 24, 24))
    plan = plan_dataset(root, budget_minutes=15, dims="3d")
    # anisotropy 2 <= 3: the median of every axis (slice axis first): 2, 1, 1
    assert plan.config["data"]["target_spacing"] == [2.0, 1.0, 1.0]
    assert load_config(plan.config).data.target_spacing == (2.0, 1.0, 1.0)


def test_the_data_layer_hint_follows_the_same_lossy_mask_rule():
    """``auto_mapping`` suggests the threshold exactly when the plan would set one."""
    with pytest.raises(DataError, match="mask_threshold: 128"):
        auto_mapping({0, 3, 7, 250, 252, 255}, None, "m.png")
    with pytest.raises(DataError, match="mask_values"):
        auto_mapping({0, 85, 170, 255}, None, "m.png")  # grey-coded classes, not noise
