import json

import pytest
import torch

from medseg.engine import checkpoint as ckpt
from medseg.errors import CheckpointError
from medseg.models import build_model


def _state(name="unet", opts=None, classes=2):
    return {
        "model_name": name,
        "model_options": opts or {"depth": 2, "base_width": 4},
        "in_channels": 3,
        "num_classes": classes,
        "out_channels": 1 if classes == 2 else classes,
        "task_mode": "binary" if classes == 2 else "multiclass",
        "class_names": ["bg", "fg"],
        "config": {},
    }


def _model(classes=1):
    torch.manual_seed(0)
    return build_model("unet", 3, classes, depth=2, base_width=4)


def test_roundtrip_model_optimizer_rng(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 16, 16)).mean().backward()
    opt.step()
    path = ckpt.save_checkpoint(
        tmp_path / "last.safetensors", model, {**_state(), "epoch": 3}, optimizer=opt, rng=True
    )
    expected_next = torch.rand(3)  # RNG continues from the saved state
    model2 = _model()
    for p in model2.parameters():
        p.data.zero_()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    torch.manual_seed(123)
    state = ckpt.restore_training(path, model2, opt2, expect={"model_name": "unet"})
    assert state["epoch"] == 3
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert s1["param_groups"] == s2["param_groups"]


def test_load_model_rebuilds_architecture(tmp_path):
    model = _model().eval()
    path = ckpt.save_checkpoint(tmp_path / "best.safetensors", model, _state())
    loaded, state = ckpt.load_model(path)
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(loaded(x), model(x))
    assert state["task_mode"] == "binary"


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", _model(), _state())
    other = build_model("unet", 3, 4, depth=2, base_width=4)
    with pytest.raises(CheckpointError, match="model_options|num_classes"):
        ckpt.restore_training(path, other, None, expect={"model_name": "unet", "num_classes": 4})
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.load_weights_file(other, path)


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        ckpt.read_checkpoint(bad)
    path = ckpt.save_checkpoint(tmp_path / "ok.safetensors", _model(), _state())
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        ckpt.read_checkpoint(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a medseg checkpoint"):
        ckpt.read_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.read_checkpoint(tmp_path / "missing.safetensors")


def test_pickle_payload_is_never_executed(tmp_path):
    """A .pt file with a pickled object (arbitrary code) is refused by weights_only loading."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        ckpt.load_weights_file(_model(), evil)


def test_plain_state_dict_weights_load(tmp_path):
    model = _model()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = build_model("unet", 3, 1, depth=2, base_width=4, weights=tmp_path / "w.pt")
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous checkpoint intact and no temp files."""
    path = ckpt.save_checkpoint(tmp_path / "last.safetensors", _model(), {**_state(), "epoch": 1})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, _model(), {**_state(), "epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    meta = ckpt.read_checkpoint(path)[1]
    assert json.loads(json.dumps(meta))["state"]["epoch"] == 1
