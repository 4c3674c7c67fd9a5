"""3-D patch training end to end on tiny synthetic volumes: the task knows 2-D from 3-D, a
run trains and its loss falls, validation and prediction return each volume in its own
shape, and a saved checkpoint predicts exactly what the trained model did."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.data.synthetic import write_box_volumes
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.evaluator import evaluate_checkpoint
from medseg.engine.predict import open_checkpoint, predict_case
from medseg.engine.task import spatial_dims
from medseg.engine.train_setup import build_loop, build_parts, setup_device
from medseg.engine.train_step import train_step
from medseg.engine.trainer import train
from medseg.errors import ConfigError
from medseg.models import build_model


def _config(tmp_path, **train):
    write_box_volumes(tmp_path / "tr", n=2)
    write_box_volumes(tmp_path / "va", n=1, seed=1, prefix="val")
    return load_config(
        {
            "name": "tiny3d",
            "output_dir": str(tmp_path / "run"),
            "model": {"name": "unet3d", "options": {"base_width": 4, "max_width": 16}},
            "loss": {"name": "dice_ce"},
            "optim": {"name": "adamw", "lr": 0.01},
            "train": {"epochs": 1, "batch_size": 2, "val_every": 1, "seed": 0, **train},
            "eval": {"overlap": 0.25},
            "data": {
                "root": str(tmp_path / "tr"),
                "val_root": str(tmp_path / "va"),
                "format": "h5",
                "patch_size": [8, 16, 16],
                "train_repeats": 2,
            },
            "augment": {"enabled": False},
        }
    )


def test_the_task_is_3d_for_a_3d_model_with_a_3d_patch_and_refuses_a_mix(tmp_path):
    cfg = _config(tmp_path)
    assert spatial_dims(cfg) == 3
    with pytest.raises(ConfigError, match="patch_size"):
        spatial_dims(load_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "patch_size": None}}))
    with pytest.raises(ConfigError, match="3-D model"):
        spatial_dims(load_config({**cfg.to_dict(), "model": {"name": "unet"}}))


def test_training_on_patches_lowers_the_loss_on_a_learnable_volume(tmp_path):
    cfg = _config(tmp_path)
    dist, device = setup_device(cfg)
    parts = build_parts(cfg, dist, device)
    assert parts.task.dims == 3 and parts.model_state["spatial_dims"] == 3
    assert parts.model_state["model_options"]["patch_size"] == [8, 16, 16]  # the topology fits the patch
    loop = build_loop(parts)
    batch = next(iter(loop.loader))
    assert batch["image"].shape == (2, 1, 8, 16, 16) and batch["forced"].tolist() == [False, True]
    losses = [train_step(loop.step, batch)[0] for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0]
    # the trained model, saved and reloaded the way evaluate/predict load it, predicts the same
    path = save_checkpoint(tmp_path / "m.safetensors", parts.model, parts.model_state)
    volume = torch.randn(9, 1, 23, 20)
    model = parts.model.eval()
    labels, proba = predict_case(model, {"image": volume}, cfg, device, tta=False, crf=False)
    loaded = open_checkpoint(path)
    again, proba_again = loaded.predict({"image": volume}, tta=False, crf=False)
    assert np.array_equal(labels, again) and torch.allclose(proba, proba_again, atol=1e-6)


def test_a_run_validates_whole_volumes_and_its_checkpoint_predicts_identically(tmp_path):
    cfg = _config(tmp_path, epochs=2)
    result = train(cfg)
    assert len(result["history"]) == 2 and np.isfinite(result["best_val_dice"])
    loaded = open_checkpoint(result["checkpoint"])
    assert loaded.task.dims == 3
    case = {"image": torch.randn(7, 1, 21, 19)}  # odd sizes, smaller than the patch in depth
    labels, proba = loaded.predict(case, tta=False, crf=False)
    assert labels.shape == (7, 21, 19) and proba.shape == (7, 3, 21, 19)
    scored = evaluate_checkpoint(result["checkpoint"], data_root=tmp_path / "va", out_dir=tmp_path / "ev")
    assert {r["case"] for r in scored["records"]} == {"val0_frame01"}
    assert (tmp_path / "ev" / "run.json").is_file()


def test_sliding_window_prediction_returns_the_volume_shape_and_mirroring_is_consistent(tmp_path):
    cfg = _config(tmp_path)
    torch.manual_seed(0)
    model = build_model("unet3d", 1, 3, base_width=4, max_width=16, patch_size=(8, 16, 16)).eval()
    volume = torch.randn(11, 1, 37, 29)
    labels, proba = predict_case(model, {"image": volume}, cfg, torch.device("cpu"), tta=False, crf=False)
    assert labels.shape == (11, 37, 29) and labels.dtype == np.uint8
    assert proba.shape == (11, 3, 37, 29)
    assert torch.allclose(proba.sum(1), torch.ones(11, 37, 29), atol=1e-5)
    assert np.array_equal(labels, proba.argmax(1).numpy())
    _, mirrored = predict_case(model, {"image": volume}, cfg, torch.device("cpu"), tta=True, crf=False)
    assert mirrored.shape == proba.shape and not torch.equal(mirrored, proba)
