"""One prediction path: validation, evaluation and prediction see the same labels; masks and
overlays are written by their own public functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.config import load_config
from medseg.engine.checkpoint import load_model, save_checkpoint
from medseg.engine.distributed import Distributed
from medseg.engine.evaluator import evaluate_cases
from medseg.engine.mask_files import safe_name, write_mask
from medseg.engine.overlays import case_overlay, side_by_side
from medseg.engine.predict import labels_from_proba, open_checkpoint, predict_case
from medseg.engine.train_setup import build_loop, build_parts
from medseg.engine.train_step import train_step
from medseg.engine.validation import foreground_dice, validate

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=16",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.0",
    "model.options={depth: 2, base_width: 4}",
    "train.batch_size=4",
    "train.seed=1",
    "train.log_tensorboard=false",
    "optim.lr=0.01",
    "eval.surface=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net after a few steps (so that its predictions are not all one class)."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, TINY + [f"output_dir={out}"])
    parts = build_parts(cfg, Distributed(), torch.device("cpu"))
    loop = build_loop(parts)
    batch = next(iter(loop.loader))
    for _ in range(10):
        train_step(loop.step, batch)
    return parts, out


def test_validation_and_evaluation_score_a_case_identically(trained):
    parts, _ = trained
    cfg, model, task, cases = parts.cfg, parts.model, parts.task, parts.data.val
    model.eval()
    result = evaluate_cases(model, cases, task, cfg, out_dir=None)
    by_case = {r["case"]: r["dice"] for r in result["records"]}
    per_case = []
    for i in range(len(cases)):
        case = cases[i]
        labels, proba = predict_case(model, case, cfg, torch.device("cpu"), tta=False, crf=False)
        assert torch.equal(torch.as_tensor(labels).long(), labels_from_proba(proba))
        per_case.append(foreground_dice(labels, case["mask"].numpy(), task.num_classes))
        assert by_case[case["id"]] == pytest.approx(per_case[-1], abs=1e-12)
    assert 0 < np.mean(per_case) < 1  # a non-trivial prediction
    assert validate(model, cases, task, cfg, torch.device("cpu")) == pytest.approx(np.mean(per_case))
    assert model.training  # validation hands the model back in training mode


def test_a_checkpoint_opened_for_inference_predicts_what_the_model_predicts(trained, tmp_path):
    parts, _ = trained
    path = save_checkpoint(tmp_path / "c.safetensors", parts.model, parts.model_state)
    plain, _ = load_model(path)
    loaded = open_checkpoint(path, device="cpu")  # Conv-BN folded, preferred memory format
    assert loaded.task == parts.task
    for i in range(len(parts.data.val)):
        case = parts.data.val[i]
        _, p_ref = predict_case(plain, case, parts.cfg, torch.device("cpu"))
        _, p = loaded.predict(case)
        torch.testing.assert_close(p, p_ref, rtol=1e-4, atol=1e-5)


def test_write_mask_formats(tmp_path):
    labels = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    png = write_mask(labels, {"id": "a/b c"}, tmp_path, binary=True)
    assert png.name == "a_b_c.png"
    assert np.array_equal(np.asarray(Image.open(png)), labels * 255)
    multi = write_mask(labels * 3, {"id": "m"}, tmp_path, binary=False)
    assert np.array_equal(np.asarray(Image.open(multi)), labels * 3)
    vol = write_mask(np.stack([labels, labels]), {"id": "v"}, tmp_path, binary=True)
    assert vol.suffix == ".npy" and np.load(vol).shape == (2, 2, 2)
    assert safe_name("x.y-z_1/ä") == "x.y-z_1_ä"


def test_case_overlay_shows_the_slice_with_most_ground_truth():
    display = np.zeros((3, 8, 8), dtype=np.uint8)
    labels = np.zeros((3, 8, 8), dtype=np.uint8)
    target = np.zeros((3, 8, 8), dtype=np.uint8)
    target[2, 2:6, 2:6] = 1
    labels[1, 2:6, 2:6] = 1
    out = case_overlay({"display": display}, labels, target)
    assert np.array_equal(out, side_by_side(display[2], labels[2], target[2]))
    no_truth = case_overlay({"display": display}, labels)  # without truth: most prediction
    assert np.array_equal(no_truth, side_by_side(display[1], labels[1], None))
