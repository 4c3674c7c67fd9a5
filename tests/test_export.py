"""ONNX / TorchScript export: every registered model (tiny widths) exported with dynamic
height/width and checked against PyTorch by an independent onnxruntime run at a size the
exporter never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from medseg.benchmark.presets import tiny_options
from medseg.errors import MedsegError
from medseg.export import ExportError, export_checkpoint, export_model, export_sizes
from medseg.models import MODELS, build_model, list_models

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TOL = 1e-4


def _fresh_size(model: nn.Module, result: dict) -> tuple[int, int]:
    """A size the export and its own check did not use (or the fixed size of a static export)."""
    if "height" not in result["dynamic_axes"]:
        return tuple(result["sizes"][0])
    if callable(getattr(model, "valid_input_size", None)):
        h, w = result["sizes"][-1]
        return model.valid_input_size(model.output_size(h) + 3), model.valid_input_size(
            model.output_size(w) + 1
        )
    m = int(getattr(model, "input_multiple", 1) or 1)
    h, w = result["sizes"][-1]
    return h + 2 * m, w + m


@pytest.mark.parametrize(
    "name",
    [n for n in list_models() if MODELS.get(n).meta.get("dims", 2) == 2],  # 2-D export only
)
def test_onnx_export_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 3, 2, **tiny_options(name)).eval()
    result = export_model(model, tmp_path / name, format="onnx")
    assert result["passed"] and result["max_abs_diff"] <= TOL
    assert result["tolerance"] == TOL
    # independent check: a new session, a new random input, a size the export never saw
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    size = _fresh_size(model, result)
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(123))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= TOL
    meta = {p.key: p.value for p in onnx.load(result["path"]).metadata_props}
    assert meta["producer"] == "medseg" and meta["in_channels"] == "3"


def test_torchscript_failure_names_the_model(tmp_path):
    # max_unpool2d(output_size=...) cannot be traced by torch.jit in torch 2.13 (tensor-valued
    # torch._check); ONNX export of SegNet works through torch.export instead
    model = build_model("segnet", 3, 2, **tiny_options("segnet"))
    with pytest.raises(ExportError, match="could not export SegNet to torchscript: trace: TypeError"):
        export_model(model, tmp_path / "segnet.pt", format="torchscript")


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus"])
def test_torchscript_export_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 1, 3, **tiny_options(name)).eval()
    result = export_model(model, tmp_path / f"{name}.pt", format="torchscript")
    assert result["passed"] and result["max_abs_diff"] <= TOL
    loaded = torch.jit.load(result["path"])
    size = _fresh_size(model, result)
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=TOL, rtol=0)


class _Noisy(nn.Module):
    """Not a function of its input: no exported graph can match it."""

    in_channels, num_classes, input_multiple = 3, 2, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.rand_like(x[:, :2])


def test_mismatch_is_an_error_naming_the_difference(tmp_path):
    with pytest.raises(ExportError, match=r"differs from PyTorch: max abs difference .* > tolerance 0.0001"):
        export_model(_Noisy(), tmp_path / "noisy.onnx", exporter="torchscript")


def test_bad_arguments(tmp_path):
    model = build_model("unet", 3, 2, **tiny_options("unet"))
    with pytest.raises(MedsegError, match="unknown export format 'tflite'"):
        export_model(model, tmp_path / "m", format="tflite")
    with pytest.raises(MedsegError, match="unknown exporter"):
        export_model(model, tmp_path / "m", exporter="magic")
    with pytest.raises(MedsegError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing.safetensors")


def test_export_sizes_respect_the_model_multiple():
    model = build_model("unet", 3, 2, depth=3, base_width=4)  # multiple 8
    (h0, w0), (h1, w1) = export_sizes(model, (60, 70))
    assert (h0, w0) == (64, 72) and (h1, w1) == (72, 88)
    assert all(s % 8 == 0 for s in (h0, w0, h1, w1))


def test_export_checkpoint_round_trip(tmp_path):
    from medseg.engine.checkpoint import save_checkpoint

    opts = tiny_options("unet")
    model = build_model("unet", 3, 1, **opts)
    ckpt = save_checkpoint(
        tmp_path / "best.safetensors",
        model,
        {"model_name": "unet", "model_options": opts, "in_channels": 3, "num_classes": 2, "out_channels": 1},
    )
    result = export_checkpoint(ckpt, format="onnx")
    assert result["path"] == str(tmp_path / "best.onnx") and result["passed"]
    meta = {p.key: p.value for p in onnx.load(result["path"]).metadata_props}
    assert meta["model_name"] == "unet" and json.loads(meta["model_options"]) == opts
    assert meta["num_classes"] == "2" and meta["out_channels"] == "1"
