"""``--compile`` and ``--precision``: the missing-compiler message, the throw-away compile step
leaving no trace, the inference wrappers, and the CLI mapping. torch.compile itself is replaced by
the identity where a test only checks our bookkeeping (compiling takes minutes on 2 cores)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medseg.engine.compile as compile_mod
from medseg.cli import _overrides, main
from medseg.cli_parser import build_parser
from medseg.config import load_config
from medseg.engine.compile import (
    compile_for_training,
    find_cpp_compiler,
    prepare_inference,
    require_compiler,
)
from medseg.engine.device import InferenceAutocast
from medseg.errors import MedsegError
from medseg.models import build_model


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)


def test_missing_compiler_is_one_clear_error(no_compiler):
    assert find_cpp_compiler() is None
    with pytest.raises(MedsegError) as err:
        require_compiler(torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and "C/C++ compiler" in msg and "without --compile" in msg


def test_compiler_found_names_inductors_choice(monkeypatch):
    monkeypatch.setenv("CXX", "my-cxx")
    monkeypatch.setattr(compile_mod, "cpp_compiler_candidates", lambda: ["my-cxx"])
    monkeypatch.setattr(
        compile_mod.shutil, "which", lambda name: f"toolchain/bin/{name}" if name == "my-cxx" else None
    )
    assert find_cpp_compiler() == "toolchain/bin/my-cxx"
    require_compiler(torch.device("cpu"))  # no error


def test_cli_profile_compile_without_compiler_one_line_no_traceback(no_compiler, capsys):
    assert main(["profile", "unet", "--compile", "--size", "32", "32", "--steps", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "C/C++ compiler" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1)
    )


def test_compile_step_leaves_weights_stats_grads_and_rng_untouched(monkeypatch):
    monkeypatch.setattr(compile_mod.torch, "compile", lambda m: m)  # bookkeeping only
    net = _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    compiled, seconds = compile_for_training(
        net, x, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False)
    )
    assert compiled is net and seconds > 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats and counter included
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_inference_autocast_is_bf16_close_and_transparent():
    model = build_model("unet", 3, 2, depth=2, base_width=8).eval()
    x = torch.randn(1, 3, 32, 32)
    wrapped = InferenceAutocast(model, torch.device("cpu"))
    with torch.no_grad():
        ref, out = model(x), wrapped(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert not torch.equal(out, ref)  # it really ran in bf16
    assert torch.allclose(out, ref, atol=0.1 * ref.abs().max().item())  # bf16: ~3 significant digits
    assert wrapped.input_multiple == model.input_multiple
    assert wrapped.preferred_memory_format == model.preferred_memory_format


def test_prepare_inference_defaults_keep_the_model(monkeypatch):
    cfg = load_config(None, [])
    model = build_model("unet", 3, 2, depth=2, base_width=8).eval()
    assert prepare_inference(model, cfg.eval, (256, 256), torch.device("cpu")) is model
    cfg = load_config(None, ["eval.precision=bf16"])
    assert isinstance(prepare_inference(model, cfg.eval, (256, 256), torch.device("cpu")), InferenceAutocast)
    seen = []
    monkeypatch.setattr(compile_mod.torch, "compile", lambda m: seen.append(m) or m)
    cfg = load_config(None, ["eval.compile=true"])
    prepare_inference(model, cfg.eval, (256, 256), torch.device("cpu"))
    assert seen == [model]


def test_cli_precision_and_compile_map_to_config():
    args = build_parser().parse_args(["train", "--precision", "bf16", "--compile"])
    cfg = load_config(None, _overrides(args))
    assert cfg.train.amp == "bf16" and cfg.train.compile is True
    args = build_parser().parse_args(["train", "--precision", "fp32"])
    assert load_config(None, _overrides(args)).train.amp == "none"
    args = build_parser().parse_args(["train", "--precision", "fp32", "--amp", "bf16"])
    with pytest.raises(MedsegError):
        _overrides(args)
    cfg = load_config(None, [])
    assert cfg.train.compile is False and cfg.eval.compile is False and cfg.eval.precision == "fp32"


def test_cli_train_and_predict_compile_without_compiler_create_nothing(no_compiler, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--set", "data.synthetic.n=8", "--set", "data.synthetic.size=32"]
    assert main(["train", "--out", str(out), *tiny, "--compile", "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "C/C++ compiler" in err[0]
    assert not out.exists()
    pred = tmp_path / "pred"
    args = [
        "predict",
        str(tmp_path / "x.safetensors"),
        str(tmp_path),
        "--out",
        str(pred),
        "--compile",
        "--device",
        "cpu",
    ]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "C/C++ compiler" in err[0]
    assert not pred.exists()
