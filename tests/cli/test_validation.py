"""Bad command-line values: one line naming the option, exit 2, no traceback, nothing created."""

from __future__ import annotations

import pytest

from medseg.cli import main

TINY = [
    "--set",
    "data.synthetic.n=8",
    "--set",
    "data.synthetic.size=32",
    "--set",
    "model.options={depth: 2, base_width: 4}",
    "--set",
    "train.log_tensorboard=false",
]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medseg: error:"), err
    return lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--device", "cuda:abc"], "cuda:abc"),
        (["train", "--seed", str(2**70)], "train.seed"),
        (["train", "--lr", "inf"], "optim.lr"),
        (["train", "--lr", "nan"], "optim.lr"),
        (["train", "--set", "optim.weight_decay=.inf"], "optim.weight_decay"),
        (["train", "--size", "40000", "40000"], "data.size"),
        (["train", "--set", "model.options.base_width=-1"], "base_width=-1"),
        (["train", "--epochs", "1", "--set", "train.epochs=2"], "train.epochs"),
        (["train", "--amp", "fp16", "--device", "cpu"], "fp16"),
        (["evaluate", "x.safetensors", "--device", "cuda:abc"], "cuda:abc"),
        (["evaluate", "x.safetensors", "--window", "0", "0"], "--window"),
        (["predict", "x.safetensors", "in", "--out", "o", "--window", "-4", "64"], "--window"),
        (["predict", "x.safetensors", "in", "--out", "o", "--device", "gpu"], "gpu"),
        (["profile", "unet", "--batch", "0"], "--batch"),
        (["profile", "unet", "--size", "0", "0"], "--size"),
        (["profile", "unet", "--size", "40000", "40000"], "--size"),
        (["profile", "unet", "--device", "cuda:x"], "cuda:x"),
    ],
)
def test_bad_values_give_one_line_and_create_nothing(args, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    extra = ["--out", str(out), *TINY] if args[0] == "train" else []
    assert main([args[0], *extra, *args[1:]]) == 2
    assert fragment in _one_error_line(capsys)
    assert not out.exists()


def test_same_value_twice_is_not_a_conflict():
    from medseg.cli import _overrides, build_parser

    args = build_parser().parse_args(["train", "--epochs", "3", "--set", "train.epochs=3"])
    assert "train.epochs=3" in _overrides(args)


def test_data_overrides_keep_the_phantom_default(tmp_path, capsys):
    from medseg.config import load_config

    cfg = load_config(None, ["data.synthetic.n=12"])
    assert cfg.data.format == "synthetic" and cfg.data.synthetic.n == 12
    assert load_config(None, ["data.root=somewhere"]).data.format == "auto"
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--out", str(out), "--set", "data.synthetic.n=12"]
    assert main([*args, *TINY[2:], "--set", "data.synthetic.size=32", "--set", "data.size=[32,32]"]) == 0
    assert (out / "checkpoints" / "last.safetensors").is_file()
