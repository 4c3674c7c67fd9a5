"""Ensembling: one model equals itself; the mean of probability maps equals numpy's mean argmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.distributed import Distributed
from medseg.engine.ensemble import ensemble_predict, ensemble_probability_folders, member_checkpoints
from medseg.engine.predictor import predict_folder
from medseg.engine.probabilities import load_probabilities, save_probabilities
from medseg.engine.train_setup import build_parts
from medseg.errors import MedsegError

TINY = [
    "data.format=synthetic",
    "data.synthetic.kind=multiclass",
    "data.synthetic.n=6",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "model.options={depth: 2, base_width: 4}",
    "train.log_tensorboard=false",
]


def _checkpoint(folder, seed: int):
    cfg = load_config(None, TINY + [f"output_dir={folder}", f"train.seed={seed}"])
    torch.manual_seed(seed)
    parts = build_parts(cfg, Distributed(), torch.device("cpu"))
    return save_checkpoint(folder / "checkpoints" / "best.safetensors", parts.model, parts.model_state)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [_checkpoint(root / f"fold_{k}", seed=k) for k in range(2)], root


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 40), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_ensemble_of_one_model_equals_its_prediction(runs, images, tmp_path):
    (ckpt, _), _ = runs
    predict_folder(ckpt, images, tmp_path / "single", device="cpu", overlays=False, save_probabilities=True)
    ensemble_predict([ckpt], images, tmp_path / "ens", device="cpu", save_probs=True)
    for name in ("a", "b"):
        one = np.asarray(Image.open(tmp_path / "single" / "masks" / f"{name}.png"))
        ens = np.asarray(Image.open(tmp_path / "ens" / "masks" / f"{name}.png"))
        np.testing.assert_array_equal(one, ens)
        p1 = load_probabilities(tmp_path / "single" / "probabilities" / f"{name}.npz")
        p2 = load_probabilities(tmp_path / "ens" / "probabilities" / f"{name}.npz")
        assert p1.case_id == name and p1.channels == ("background", "organ", "ring", "core")
        assert p1.probabilities.shape == (4, 32, 40)
        np.testing.assert_allclose(p1.probabilities, p2.probabilities, atol=1e-3)


def test_run_of_folds_means_every_fold(runs, images, tmp_path):
    (c0, c1), root = runs
    assert member_checkpoints(root) == [c0, c1]
    for k, c in enumerate((c0, c1)):
        predict_folder(c, images, tmp_path / f"p{k}", device="cpu", overlays=False, save_probabilities=True)
    result = ensemble_predict([root], images, tmp_path / "ens", device="cpu", save_probs=True)
    assert len(result["members"]) == 2
    for name in ("a", "b"):
        parts = [
            load_probabilities(tmp_path / f"p{k}" / "probabilities" / f"{name}.npz").probabilities
            for k in (0, 1)
        ]
        mean = load_probabilities(tmp_path / "ens" / "probabilities" / f"{name}.npz").probabilities
        np.testing.assert_allclose(mean, (parts[0] + parts[1]) / 2, atol=2e-3)


def test_mean_of_two_probability_maps_is_numpy_mean_argmax(tmp_path):
    rng = np.random.default_rng(1)
    names = ["bg", "x", "y"]
    maps = []
    for k in range(2):
        z = rng.random((3, 6, 5)).astype(np.float32)
        p = z / z.sum(0)
        maps.append(p)
        save_probabilities(tmp_path / f"m{k}" / "case.npz", p, case_id="case", channels=names)
    ensemble_probability_folders([tmp_path / "m0", tmp_path / "m1"], tmp_path / "out")
    stored = [load_probabilities(tmp_path / f"m{k}" / "case.npz").probabilities for k in range(2)]
    expected = np.argmax((stored[0] + stored[1]) / 2, axis=0)
    got = np.asarray(Image.open(tmp_path / "out" / "masks" / "case.png"))
    np.testing.assert_array_equal(got, expected)
    mean = load_probabilities(tmp_path / "out" / "probabilities" / "case.npz")
    np.testing.assert_allclose(mean.probabilities, (maps[0] + maps[1]) / 2, atol=2e-3)


def test_mismatched_probability_folders_are_refused(tmp_path):
    p = np.full((2, 3, 3), 0.5, np.float32)
    save_probabilities(tmp_path / "m0" / "a.npz", p, case_id="a", channels=["bg", "fg"])
    save_probabilities(tmp_path / "m1" / "b.npz", p, case_id="b", channels=["bg", "fg"])
    with pytest.raises(MedsegError, match="different cases"):
        ensemble_probability_folders([tmp_path / "m0", tmp_path / "m1"], tmp_path / "out")
    with pytest.raises(MedsegError, match="not a checkpoint"):
        member_checkpoints(tmp_path / "m0")
