"""The `medseg` command: help, listing, one-line errors, evaluate/predict on a tiny run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main

TINY = [
    "--set",
    "data.format=synthetic",
    "--set",
    "data.synthetic.n=16",
    "--set",
    "data.synthetic.size=32",
    "--set",
    "data.size=[32,32]",
    "--set",
    "data.split.val_fraction=0.25",
    "--set",
    "data.split.test_fraction=0.25",
    "--set",
    "model.options={depth: 2, base_width: 4}",
    "--set",
    "train.log_tensorboard=false",
    "--set",
    "eval.overlays=2",
    "--set",
    "train.batch_size=4",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "MEDSEG_NO_PROGRESS": "1"},
    )


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for cmd in ("demo", "train", "evaluate", "predict", "info", "list", "compare"):
        assert cmd in out
    train_help = run_cli("train", "--help").stdout
    assert "--resume" in train_help and "--set" in train_help and "--budget" in train_help


def test_list_shows_models_and_losses():
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "unet" in text and "dice_ce" in text and "Ronneberger" in text


def test_train_budget_goes_to_the_config_in_minutes():
    from medseg.cli import _overrides, build_parser

    for given, minutes in (("90s", "1.5"), ("10", "10"), ("1.5h", "90")):
        args = build_parser().parse_args(["train", "--budget", given])
        assert f"train.budget_minutes={minutes}" in _overrides(args)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--set", "train.epochs=0"], "train.epochs"),
        (["train", "--model", "unett"], "Did you mean 'unet'"),
        (["evaluate", "missing.safetensors"], "missing.safetensors"),
        (["train", "--set", "model.options={bogus: 1}", "--set", "data.format=synthetic"], "bogus"),
        (["train", "--budget", "soon"], "budget 'soon': expected a duration such as 90s, 10m, 1.5h"),
        (["benchmark", "--models", "unet", "--losses", "dice", "--budget", "-3"], "budget '-3'"),
    ],
)
def test_errors_are_one_line_without_traceback(args, fragment, tmp_path):
    proc = run_cli(*args, *(["--out", str(tmp_path / "o")] if args[0] in ("train", "benchmark") else []))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medseg: error:"), proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_dataset_leaves_no_output(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(data / "masks" / "a.png")  # size mismatch
    out = tmp_path / "run"
    proc = run_cli("train", "--data", str(data), "--out", str(out))
    assert proc.returncode == 2
    assert "a.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_evaluate_predict_roundtrip(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *TINY]) == 0
    best = out / "checkpoints" / "best.safetensors"
    assert best.is_file()
    assert main(["evaluate", str(best), "--per-case"]) == 0
    ev = out / "eval" / "test"
    assert any(ev.glob("*.csv")) and any((ev / "overlays").glob("*.png"))
    # predict on a folder of new images: masks come back at the original sizes
    imgs = tmp_path / "new"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("x", (37, 45, 3)), ("y", (64, 50, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(imgs / f"{name}.png")
    assert main(["predict", str(best), str(imgs), "--out", str(tmp_path / "pred")]) == 0
    for name, shape in (("x", (37, 45)), ("y", (64, 50))):
        mask = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{name}.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 2


def test_evaluate_refuses_wrong_channel_count(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *TINY]) == 0
    grey = tmp_path / "grey"
    (grey / "images").mkdir(parents=True)
    (grey / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(grey / "images" / "g.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(grey / "masks" / "g.png")
    proc = run_cli(
        "predict",
        str(out / "checkpoints" / "best.safetensors"),
        str(grey / "images"),
        "--out",
        str(tmp_path / "p"),
    )
    assert proc.returncode == 2 and "channels" in proc.stderr, proc.stderr


def test_info_prints_and_saves_fingerprint(tmp_path, data_root):
    js = tmp_path / "fp.json"
    proc = run_cli("info", str(data_root / "ph2"), "--json", str(js))
    assert proc.returncode == 0, proc.stderr
    import json

    import numpy as np
    from PIL import Image

    fp = json.loads(js.read_text())
    masks = [np.asarray(Image.open(p)) for p in sorted((data_root / "ph2" / "masks").glob("*.png"))]
    n_images = len(list((data_root / "ph2" / "images").iterdir()))
    assert fp["num_cases"] == n_images == len(masks) == 64 and fp["num_labelled"] == 64
    assert fp["mask_values"] == [0, 255] and fp["num_classes"] == 2 and fp["channels"] == {"3": 64}
    foreground = sum(int((m == 255).sum()) for m in masks) / sum(m.size for m in masks)
    assert fp["class_frequency"]["foreground"] == pytest.approx(foreground, rel=1e-9)
    assert fp["problems"] == [] and "64 (64 with masks)" in proc.stdout + proc.stderr  # the printed table


def test_demo_help():
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0 and "phantom" in proc.stdout
