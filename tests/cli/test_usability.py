"""Usability of the `medseg` command: answers on stdout, plain rows when piped, no unasked files,
exit codes that can gate a pipeline, defaults that survive overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSEG_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def _folder(root: Path, mask_shape: tuple[int, int] = (20, 20)) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(root / "images" / f"c{i}.png")
        mask = np.zeros(mask_shape if i == 0 else (20, 20), np.uint8)
        mask[5:10, 5:10] = 255
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    return root


def test_list_prints_plain_unwrapped_rows_on_stdout_when_piped():
    proc = run_cli("list", "models")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0] == ["name", "parameters", "input multiple", "summary", "paper"]
    unet = [r for r in rows if r[0] == "unet"]
    # the whole row on one line: `medseg list models | grep unet` finds the paper too
    assert len(unet) == 1 and "Ronneberger" in unet[0][4] and len("\t".join(unet[0])) > 80
    assert all(len(r) == 5 for r in rows)
    assert "unet" not in proc.stderr


def test_list_json_is_machine_readable():
    proc = run_cli("list", "losses", "--json")
    assert proc.returncode == 0, proc.stderr
    losses = json.loads(proc.stdout)["losses"]
    assert {"name", "aliases", "summary", "paper"} == set(losses[0])
    assert "dice_ce" in {row["name"] for row in losses}


def test_info_writes_nothing_unasked_and_prints_on_stdout(tmp_path):
    data = _folder(tmp_path / "ds")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_cli("info", str(data), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert list(work.iterdir()) == [] and not list(data.glob("*.json"))
    rows = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert rows["cases"] == "3 (3 with masks)"
    js = tmp_path / "fp.json"
    assert run_cli("info", str(data), "--json", str(js), cwd=work).returncode == 0
    assert json.loads(js.read_text())["num_cases"] == 3 and list(work.iterdir()) == []


def test_info_exits_non_zero_when_it_lists_a_problem(tmp_path):
    data = _folder(tmp_path / "ds", mask_shape=(24, 20))  # c0's mask does not match its image
    proc = run_cli("info", str(data), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith("problem\t")]
    assert len(problems) == 1 and "c0.png" in problems[0]
    assert "Traceback" not in proc.stderr


def test_medseg_warnings_print_as_one_note_line_and_others_keep_python_format(capsys):
    """ACDC's affine/pixdim disagreement reaches a CLI user as one ``medseg: note:`` line, not as
    Python's two-line warning echo with medseg's source line; warnings of other code are left alone."""
    import warnings

    from medseg.cli_output import warnings_as_notes
    from medseg.data.geometry import affine

    affine.reset_warning()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with warnings_as_notes():
            affine._warn_once("case.nii.gz", (1.0, 1.0, 1.0), (1.5, 1.5, 10.0))
            warnings.warn("from a test, not from medseg", UserWarning, stacklevel=1)
        with warnings_as_notes(enabled=False):  # --debug
            affine.reset_warning()
            affine._warn_once("other.nii.gz", (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    affine.reset_warning()
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("medseg: note:")]
    assert len(notes) == 1 and notes[0].startswith("medseg: note: case.nii.gz: affine voxel size (1, 1, 1)")
    assert not any(
        "warnings.warn(" in line or "GeometryWarning" in line for line in err if "case.nii" in line
    )
    assert not any("from a test" in line for line in notes) and not any(
        "other.nii.gz" in line for line in notes
    )
