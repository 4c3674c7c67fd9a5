"""Models with auxiliary outputs train through the same trainer (PSPNet aux head, BEFUnet edges)."""

from __future__ import annotations

import csv
import math

from medseg.config import load_config
from medseg.engine.trainer import train

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=12",
    "data.synthetic.size=64",
    "data.size=[64,64]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.0",
    "train.batch_size=3",
    "train.log_tensorboard=false",
    "train.epochs=1",
    "train.steps_per_epoch=2",
]


def _losses(path):
    with open(path / "log.csv") as fh:
        return [float(r["train_loss"]) for r in csv.DictReader(fh)]


def test_pspnet_trains_with_auxiliary_loss(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            "model.name=pspnet",
            "model.options={backbone: resnet18, width_mult: 0.125}",
            f"output_dir={tmp_path}",
        ],
    )
    train(cfg)
    assert all(math.isfinite(v) for v in _losses(tmp_path))


def test_befunet_trains_with_edge_loss(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            "model.name=befunet_small",
            "loss.name=befunet",
            "model.options={embed_dim: 12, window_size: 2}",
            f"output_dir={tmp_path}",
        ],
    )
    train(cfg)
    assert all(math.isfinite(v) for v in _losses(tmp_path))


def test_valid_unet_trains_on_cropped_targets(tmp_path):
    """unet_valid's output is smaller than its input: the trainer crops targets to match."""
    cfg = load_config(
        None,
        TINY
        + [
            "model.name=unet_valid",
            "model.options={depth: 2, base_width: 4}",
            "data.size=[68,68]",
            "data.synthetic.size=68",
            f"output_dir={tmp_path}",
        ],
    )
    train(cfg)
    assert all(math.isfinite(v) for v in _losses(tmp_path))


def test_valid_unet_rejects_an_invalid_training_size(tmp_path):
    import pytest

    from medseg.errors import MedsegError

    cfg = load_config(
        None,
        TINY
        + [
            "model.name=unet_valid",
            "model.options={depth: 2, base_width: 4}",
            "data.size=[66,66]",
            "data.synthetic.size=66",
            f"output_dir={tmp_path}",
        ],
    )
    with pytest.raises(MedsegError, match="valid input"):
        train(cfg)
