"""Every kind of bad input: one line that names the file and the problem, no traceback,
and nothing written to the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.cli import main


def _pair(root: Path, name: str, image: np.ndarray | None, mask: np.ndarray | None, ext: str = "png") -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if image is not None:
        if ext == "tif":
            tifffile.imwrite(root / "images" / f"{name}.tif", image)
        else:
            Image.fromarray(image).save(root / "images" / f"{name}.{ext}")
    if mask is not None:
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def _good(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8:20] = 255
        _pair(root, f"ok{i}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), m)


def make_mismatch(root):
    _good(root)
    _pair(root, "bad", np.zeros((32, 32, 3), np.uint8), np.zeros((30, 32), np.uint8))
    return "bad"


def make_unknown_values(root):
    _good(root)
    m = np.zeros((32, 32), np.uint8)
    m[0, 0] = 77
    _pair(root, "bad", np.zeros((32, 32, 3), np.uint8), m)
    return "bad"


def make_missing_mask(root):
    _good(root)
    _pair(root, "bad", np.zeros((32, 32, 3), np.uint8), None)
    return "bad"


def make_corrupt(root):
    _good(root)
    _pair(root, "bad", None, np.zeros((32, 32), np.uint8))
    good = (root / "images" / "ok0.png").read_bytes()
    (root / "images" / "bad.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    return "bad.png"


def make_empty(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    return "images"


def make_wrong_channels(root):
    _good(root)
    _pair(root, "bad", np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8))  # grey among RGB
    return "bad"


def make_nan(root):
    _good(root)
    img = np.zeros((32, 32, 3), np.float32)
    img[3, 3, 0] = np.nan
    _pair(root, "bad", img, np.zeros((32, 32), np.uint8), ext="tif")
    return "bad"


CASES = {
    "size mismatch": make_mismatch,
    "unknown mask value": make_unknown_values,
    "missing mask": make_missing_mask,
    "truncated file": make_corrupt,
    "empty folder": make_empty,
    "wrong channel count": make_wrong_channels,
    "NaN intensities": make_nan,
}


@pytest.mark.parametrize("plan", ["auto", "none"])
@pytest.mark.parametrize("kind", list(CASES))
def test_bad_dataset_gives_one_line_naming_the_file(kind, plan, tmp_path, capsys):
    """Planned from the data (the default without -c) or with built-in values: one line, no output."""
    data = tmp_path / "data"
    fragment = CASES[kind](data)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--plan", plan]
    code = main([*args, "--set", "data.size=[32,32]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("medseg: error:"), err
    assert fragment in err[0], err[0]
    assert not out.exists(), "nothing may be written for a dataset that fails validation"
