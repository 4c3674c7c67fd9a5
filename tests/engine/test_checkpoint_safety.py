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


def _write(path, tensors, header: str):
    save_file(tensors, str(path), metadata={"medseg": header})
    return path


def _weights():
    return {f"model.{k}": v.detach().clone().contiguous() for k, v in _model().state_dict().items()}


@pytest.mark.parametrize("drop", ["state", "task_mode", "model_name", "class_names", "config"])
def test_a_header_lacking_a_field_is_one_checkpoint_error(tmp_path, drop):
    meta = {"format": ckpt.FORMAT, "state": _state()}
    if drop == "state":
        del meta["state"]
    else:
        del meta["state"][drop]
    path = _write(tmp_path / "c.safetensors", _weights(), json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"{path.name}.*{drop}"):
        ckpt.load_inference_model(path)


def test_wrong_types_and_ranges_are_refused(tmp_path):
    for key, value in (
        ("in_channels", "3"),
        ("num_classes", True),
        ("in_channels", 10**9),
        ("task_mode", "x"),
    ):
        meta = {"format": ckpt.FORMAT, "state": {**_state(), key: value}}
        path = _write(tmp_path / "c.safetensors", _weights(), json.dumps(meta))
        with pytest.raises(CheckpointError, match=f"c.safetensors.*{key}"):
            ckpt.load_inference_model(path)


def test_deeply_nested_metadata_is_one_checkpoint_error(tmp_path):
    header = '{"format": "' + ckpt.FORMAT + '", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = _write(tmp_path / "deep.safetensors", _weights(), header)
    with pytest.raises(CheckpointError, match="deep.safetensors"):
        ckpt.load_model(path)


def test_a_huge_model_in_the_header_is_refused_before_it_is_allocated(tmp_path, monkeypatch):
    """base_width=60000 would allocate many GB; the shapes are compared on the meta device first."""
    meta = {"format": ckpt.FORMAT, "state": {**_state(), "model_options": {"depth": 2, "base_width": 60000}}}
    path = _write(tmp_path / "huge.safetensors", _weights(), json.dumps(meta))
    real_builds = []
    original = ckpt.build_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        if next(model.parameters()).device.type != "meta":
            real_builds.append(args)
        return model

    monkeypatch.setattr(ckpt, "build_model", spy)
    with pytest.raises(CheckpointError, match="huge.safetensors.*do not fit"):
        ckpt.load_model(path)
    assert real_builds == []


def test_unknown_model_options_in_the_header_name_the_file(tmp_path):
    meta = {"format": ckpt.FORMAT, "state": {**_state(), "model_options": {"no_such_option": 1}}}
    path = _write(tmp_path / "opt.safetensors", _weights(), json.dumps(meta))
    with pytest.raises(CheckpointError, match="opt.safetensors"):
        ckpt.load_model(path)
