"""Checkpoints never hold NaN/Inf weights, and a file that does is refused at load."""

import json

import pytest
import torch
from safetensors.torch import save_file

from medseg.engine import checkpoint as ckpt
from medseg.errors import CheckpointError
from medseg.models import build_model


def _state():
    return {
        "model_name": "unet",
        "model_options": {"depth": 2, "base_width": 4},
        "in_channels": 3,
        "num_classes": 2,
        "out_channels": 1,
        "task_mode": "binary",
        "class_names": ["bg", "fg"],
        "config": {},
    }


def _model():
    torch.manual_seed(0)
    return build_model("unet", 3, 1, depth=2, base_width=4)


def _poison(model, name):
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[0] = float("nan")


def test_non_finite_weights_are_not_saved_and_previous_checkpoint_is_kept(tmp_path):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path / "last.safetensors", model, _state())
    before = path.read_bytes()
    name = next(iter(dict(model.named_parameters())))
    _poison(model, name)
    with pytest.raises(CheckpointError, match=f"NaN/Inf.*{name}"):
        ckpt.save_checkpoint(path, model, _state())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_non_finite_checkpoint_is_refused_at_load(tmp_path):
    model = _model()
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point())[3]
    tensors[bad].view(-1)[0] = float("inf")
    path = tmp_path / "nan.safetensors"
    meta = {"format": ckpt.FORMAT, "state": _state()}
    save_file(tensors, str(path), metadata={"medseg": json.dumps(meta)})
    for load in (ckpt.load_model, ckpt.load_inference_model):
        with pytest.raises(CheckpointError) as err:
            load(path)
        assert str(path) in str(err.value) and bad.removeprefix("model.") in str(err.value)
