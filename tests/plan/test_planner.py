"""``medseg plan`` end to end on synthetic data sets with known shapes and spacings: the written
config loads with medseg.config and builds its model."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg.plan.planner as planner_module
from medseg.cli import main
from medseg.cli_output import table_rows
from medseg.config import load_config
from medseg.data import write_synthetic_dataset
from medseg.models import build_model
from medseg.plan import plan_dataset, plan_json, plan_table, plan_yaml, write_plan
from medseg.plan.cost import MIN_STEPS


def _volumes(root, zooms_list, shape_xyz):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for k, zooms in enumerate(zooms_list):
        aff = np.diag([*zooms, 1.0])
        img = (rng.random(shape_xyz) * 400).astype(np.float32)
        lab = np.zeros(shape_xyz, np.uint8)
        lab[4:-4, 4:-4, :] = 1
        nib.save(nib.Nifti1Image(img, aff), str(root / "imagesTr" / f"c{k}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labelsTr" / f"c{k}.nii.gz"))
    return root


def _builds(config: dict, in_channels: int) -> torch.nn.Module:
    m = config["model"]
    return build_model(
        m["name"], in_channels=in_channels, num_classes=len(config["data"]["class_names"]), **m["options"]
    )


def test_plan_of_small_2d_images_is_the_whole_image(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=6, size=64, seed=0)
    plan = plan_dataset(root, budget_minutes=15)
    cfg = plan.config
    assert plan.dims == "2d" and cfg["data"]["size"] == [64, 64] and cfg["data"]["resize_policy"] == "resize"
    assert cfg["model"]["options"]["depth"] == 4  # 64 -> 4 px bottleneck after 4 halvings
    assert 2 <= cfg["train"]["batch_size"] <= 32 and cfg["train"]["budget_minutes"] == 15
    # deep supervision (docs/bench/recipe.md): heads on the U-Net's decoder, Dice + CE at each scale
    assert cfg["loss"] == {"name": "deep_supervision", "options": {"base": "dice_ce"}}
    assert cfg["model"]["options"]["deep_supervision"] is True and cfg["augment"]["preset"] == "custom"
    path = write_plan(plan, tmp_path / "plan.yaml")
    loaded = load_config(path)
    assert loaded.data.size == (64, 64) and loaded.train.batch_size == cfg["train"]["batch_size"]
    model = _builds(cfg, 3)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    _, aux = model.forward_aux(torch.zeros(1, 3, 64, 64))
    assert len(aux["deep_supervision"]) == 3  # the 1/2 ... 1/8 scales of a depth-4 decoder
    assert "# dimensions: 2d" in plan_yaml(plan) and plan_json(plan)["dims"] == "2d"


def test_tight_budget_shrinks_blobs_by_resizing(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=6, size=256, seed=0)
    plan = plan_dataset(root, budget_minutes=0.5)
    data = plan.config["data"]
    assert data["resize_policy"] == "resize" and max(data["size"]) < 256
    step = plan.config["train"]["batch_size"]  # the predicted step fits budget / MIN_STEPS
    assert step >= 2
    reasons = {d.name: d.reason for d in plan.decisions}
    assert f"{MIN_STEPS['2d']} steps" in reasons["patch size"]
    load_config(plan.config)


def test_thick_slice_volumes_are_planned_2d_with_the_percentile_rule(tmp_path):
    # spacing (z, y, x): (8, 1, 1), (8, 1, 1), (6, 1, 1); 4 slices x 3 < 32 in-plane voxels
    # anisotropy 8 > 3 -> 2-D, which resamples in-plane only: the slices keep their own spacing
    root = _volumes(tmp_path / "v", [(1, 1, 8), (1, 1, 8), (1, 1, 6)], (40, 32, 4))
    plan = plan_dataset(root, budget_minutes=15)
    reasons = {d.name: (d.value, d.reason) for d in plan.decisions}
    assert plan.dims == "2d" and "thick slices" in reasons["dimensions"][1]
    assert (
        reasons["target spacing"][0] == "native x 1 x 1" and "each case's own" in reasons["target spacing"][1]
    )
    cfg = load_config(plan.config)
    assert cfg.data.target_spacing == (None, 1.0, 1.0)
    assert cfg.data.size == (32, 40) and cfg.data.format == "nifti"
    assert cfg.data.normalize == "zscore" and cfg.data.intensity_clip is None  # not HU
    assert _builds(plan.config, 1)(torch.zeros(1, 1, 32, 40)).shape == (1, 2, 32, 40)


def test_isotropic_volumes_are_planned_3d_when_trainable(tmp_path, monkeypatch):
    root = _volumes(tmp_path / "v", [(1, 1, 1), (1, 1, 1)], (32, 32, 32))
    plan = plan_dataset(root, budget_minutes=15)
    if not planner_module.three_d_trainable():
        assert plan.dims == "2d" and "slice-wise" in plan.decisions[0].reason
        monkeypatch.setattr(planner_module, "three_d_trainable", lambda: True)
    plan = plan_dataset(root, budget_minutes=15)
    assert plan.dims == "3d" and plan.config["model"]["name"] == "unet3d"
    assert plan.config["data"]["patch_size"] == [32, 32, 32]
    # 32 voxels: halved while >= 8 -> 32, 16, 8 -> 4: strides of 4 stages, the first all ones
    assert plan.config["model"]["options"]["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    model = _builds(plan.config, 1)
    assert model(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_plan_refuses_data_without_masks(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=3, size=32, seed=0)
    for p in (root / "masks").iterdir():
        p.unlink()
    with pytest.raises(Exception, match="no masks"):
        plan_dataset(root)


def test_dims_3d_forces_a_3d_plan_of_thick_slices_and_the_table_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(planner_module, "three_d_trainable", lambda: True)
    root = _volumes(tmp_path / "v", [(1, 1, 8), (1, 1, 8), (1, 1, 6)], (40, 32, 4))  # the rule: 2-D
    plan = plan_dataset(root, budget_minutes=15, dims="3d")
    assert plan.dims == "3d" and plan.config["model"]["name"] == "unet3d"
    # z target = 10th percentile of [6, 8, 8] = 6 + 0.2 x 2 = 6.4 (thick slices, few of them)
    reasons = {d.name: (d.value, d.reason) for d in plan.decisions}
    assert reasons["target spacing"][0] == "6.4 x 1 x 1" and "10th percentile" in reasons["target spacing"][1]
    assert plan.config["data"]["target_spacing"] == [6.4, 1.0, 1.0]
    assert len(plan.config["data"]["patch_size"]) == 3 and "size" not in plan.config["data"]
    rows = {r[0]: r for r in table_rows(plan_table(plan))}
    assert rows["dimensions"][1] == "3d" and rows["dimensions"][2].startswith("forced by --dims 3d")
    assert "would choose 2d" in rows["dimensions"][2] and rows["augmentation"][1] == "augment defaults"
    assert "# dimensions: 3d -- forced by --dims 3d" in plan_yaml(plan)
    cfg = load_config(plan.config)
    assert cfg.data.patch_size is not None and len(cfg.data.patch_size) == 3


def test_dims_2d_forces_a_slice_wise_plan_of_isotropic_volumes(tmp_path):
    root = _volumes(tmp_path / "v", [(1, 1, 1), (1, 1, 1)], (32, 32, 32))
    plan = plan_dataset(root, budget_minutes=15, dims="2d")
    reasons = {d.name: d.reason for d in plan.decisions}
    assert plan.dims == "2d" and plan.config["model"]["name"] == "unet"
    assert reasons["dimensions"].startswith("forced by --dims 2d")
    assert load_config(plan.config).data.size is not None


def test_dims_3d_on_2d_images_is_one_error_line(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=3, size=32, seed=0)
    assert main(["plan", str(root), "--dims", "3d", "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "medseg: error: --dims 3d: the data are 2-D images; a 3-D network needs volumes"
    assert not (tmp_path / "p.yaml").exists()
