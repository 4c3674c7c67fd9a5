"""`medseg score PRED GT`: the command scores existing prediction folders like the library does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSEG_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args], capture_output=True, text=True, env=env
    )


def _pair(root: Path, name: str, ref: np.ndarray, pred: np.ndarray) -> None:
    for sub, arr in (("gt", ref), ("pred", pred)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(root / sub / f"{name}.png")


def test_score_writes_the_report_and_its_dice_is_the_hand_computed_one(tmp_path):
    ref = np.zeros((30, 30), np.uint8)
    ref[5:15, 5:15] = 255  # 100 px
    pred = np.zeros_like(ref)
    pred[5:15, 10:20] = 255  # 100 px, 50 overlapping -> Dice 0.5
    _pair(tmp_path, "a", ref, pred)
    _pair(tmp_path, "b", ref, ref)  # Dice 1
    out = tmp_path / "report"
    res = run_cli("score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-plots")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["macro"]["dice"] == 0.75
    assert summary["meta"]["hd_combine"] == "max"
    assert "0.75" in res.stdout


def test_score_with_an_unpaired_prediction_is_one_line_and_non_zero(tmp_path):
    ref = np.zeros((10, 10), np.uint8)
    _pair(tmp_path, "a", ref, ref)
    Image.fromarray(ref).save(tmp_path / "pred" / "stray.png")
    res = run_cli("score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--no-plots")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "stray" in res.stderr and len(res.stderr.strip().splitlines()) == 1
