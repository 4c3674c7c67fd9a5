"""Export never destroys or half-writes a file: own checkpoint refused, bad opset refused,
a failed check leaves the old file, a missing extra names the pip command."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from medseg.benchmark.presets import tiny_options
from medseg.cli import main
from medseg.export import ExportError, export_checkpoint, export_model
from medseg.models import build_model

pytest.importorskip("onnxruntime")


@pytest.fixture
def checkpoint(tmp_path):
    from medseg.engine.checkpoint import save_checkpoint

    opts = tiny_options("unet")
    model = build_model("unet", 3, 1, **opts)
    meta = {
        "model_name": "unet",
        "model_options": opts,
        "in_channels": 3,
        "num_classes": 2,
        "out_channels": 1,
    }
    return save_checkpoint(tmp_path / "best.safetensors", model, meta)


def test_export_over_its_own_checkpoint_is_refused(checkpoint, capsys):
    before = checkpoint.read_bytes()
    with pytest.raises(ExportError, match="is the checkpoint itself"):
        export_checkpoint(checkpoint, checkpoint)
    assert main(["export", str(checkpoint), "--out", str(checkpoint)]) == 2
    assert "checkpoint itself" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.safetensors"]


@pytest.mark.parametrize("opset", [1, 6, 99])
def test_bad_opset_is_refused_and_writes_nothing(opset, tmp_path, capsys):
    model = build_model("unet", 3, 2, **tiny_options("unet"))
    with pytest.raises(ExportError, match=f"--opset {opset}: this torch exports ONNX opsets"):
        export_model(model, tmp_path / "m.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []


class _Noisy(nn.Module):
    in_channels, num_classes, input_multiple = 3, 2, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.rand_like(x[:, :2])


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_failed_check_keeps_the_old_file_and_leaves_no_temporary(format, tmp_path):
    out = tmp_path / f"noisy.{'onnx' if format == 'onnx' else 'pt'}"
    out.write_bytes(b"the previous export")
    with pytest.raises(ExportError, match="nothing written"):
        export_model(
            _Noisy(), out, format=format, exporter="auto" if format == "torchscript" else "torchscript"
        )
    assert out.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_successful_export_replaces_the_file(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    result = export_model(build_model("unet", 3, 2, **tiny_options("unet")), out, exporter="torchscript")
    assert result["passed"] and result["path"] == str(out) and out.read_bytes()[:3] != b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_missing_export_extra_names_the_install_command(checkpoint, monkeypatch, capsys):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    assert main(["export", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "medseg[export]"' in err[0], err
    assert "onnxruntime" in err[0]
    assert not checkpoint.with_suffix(".onnx").exists()
