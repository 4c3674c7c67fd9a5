"""Region-based (multilabel) training end to end on a synthetic nested-label data set:
config -> task -> region loss -> training -> checkpoint -> evaluate per region -> predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.engine.checkpoint import read_checkpoint
from medseg.engine.evaluator import evaluate_checkpoint
from medseg.engine.predictor import predict_folder
from medseg.engine.task import Task, make_task
from medseg.engine.trainer import train
from medseg.errors import MedsegError

REGIONS = "data.regions={whole: [1, 2, 3], core: [2, 3], enhancing: [3]}"


def nested_dataset(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> Path:
    """Grey images of three nested discs (labels 1 outer, 2 middle, 3 inner), each a little
    brighter than the one around it, with noise; masks hold the labels 0..3."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = np.hypot(yy - cy, xx - cx)
        outer = rng.uniform(0.28, 0.36) * size
        label = np.zeros((size, size), np.uint8)
        for k, frac in ((1, 1.0), (2, 0.65), (3, 0.35)):
            label[r < outer * frac] = k
        img = 40 + 55 * label + rng.normal(0, 12, (size, size))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(label).save(root / "masks" / f"c{i:02d}.png")
    return root


def _config(tmp_path: Path, data: Path, *extra: str):
    return load_config(
        None,
        [
            f"data.root={data}",
            "data.size=[32,32]",
            "data.split.val_fraction=0.25",
            REGIONS,
            "model.options={depth: 2, base_width: 8}",
            "train.batch_size=4",
            "train.seed=0",
            "train.log_tensorboard=false",
            "optim.lr=0.01",
            "eval.overlays=0",
            f"output_dir={tmp_path / 'run'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    data = nested_dataset(tmp / "data")
    cfg = _config(tmp, data, "train.epochs=8")
    result = train(cfg)
    return tmp, data, cfg, result


def test_training_learns_regions(trained):
    tmp, _, _, result = trained
    with open(tmp / "run" / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    dice = [float(r["val_dice"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    assert loss[-1] < 0.8 * loss[0], loss
    assert max(dice[-3:]) > dice[0] + 0.1, dice  # mean Dice over the three regions rises
    assert result["best_val_dice"] > 0.5, dice


def test_checkpoint_records_the_regions(trained):
    tmp, *_ = trained
    _, meta = read_checkpoint(tmp / "run" / "checkpoints" / "best.safetensors")
    state = meta["state"]
    assert state["task_mode"] == "multilabel" and state["out_channels"] == 3
    task = Task.from_state(state)
    assert task.regions == ((1, 2, 3), (2, 3), (3,))
    assert task.region_names == ("whole", "core", "enhancing")


def test_evaluate_reports_per_region(trained):
    tmp, data, _, _ = trained
    out = tmp / "eval"
    result = evaluate_checkpoint(
        tmp / "run" / "checkpoints" / "best.safetensors", data_root=data, out_dir=out, device="cpu"
    )
    classes = {r["class"] for r in result["records"]}
    assert classes == {"whole", "core", "enhancing"}
    assert all(0.0 <= r["dice"] <= 1.0 for r in result["records"])
    summary = json.loads((out / "summary.json").read_text())
    assert "whole" in json.dumps(summary)


def test_predict_writes_label_maps_from_regions(trained):
    tmp, data, _, _ = trained
    out = tmp / "pred"
    predict_folder(
        tmp / "run" / "checkpoints" / "best.safetensors", data / "images", out, device="cpu", overlays=False
    )
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 24
    values = set()
    for m in masks:
        values |= set(np.unique(np.asarray(Image.open(m))).tolist())
    assert values <= {0, 1, 2, 3} and 3 in values  # nested regions painted back to labels


def test_regions_with_a_softmax_mode_are_refused():
    with pytest.raises(MedsegError, match="multilabel"):
        make_task("multiclass", 4, ["bg", "a", "b", "c"], {"whole": [1, 2, 3]})
    task = make_task("multilabel", 3, ["bg", "a", "b"])  # no regions: one per foreground class
    assert task.regions == ((1,), (2,)) and task.out_channels == 2


def test_acdc_regions_preset_trains(real_data, tmp_path):
    """configs/unet_acdc_regions.yaml on the real ACDC slices, shrunk to a few steps."""
    acdc = real_data("acdc")
    preset = Path(__file__).parents[2] / "configs" / "unet_acdc_regions.yaml"
    cfg = load_config(
        preset,
        [
            f"data.root={acdc}",
            "data.size=[64,64]",
            "model.options={depth: 2, base_width: 8, norm: batch, deep_supervision: true}",
            "train.budget_minutes=null",
            "train.epochs=2",
            "train.steps_per_epoch=4",
            "train.val_every=1",
            "train.log_tensorboard=false",
            "eval.overlays=0",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    result = train(cfg)
    _, meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    task = Task.from_state(meta["state"])
    assert task.regions == ((1, 2, 3), (2, 3), (3,))
    assert task.region_names == ("heart", "epicardium", "LV")
    assert 0.0 <= result["best_val_dice"] <= 1.0
