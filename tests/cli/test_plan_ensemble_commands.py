"""``medseg plan`` writes a config that ``medseg train -c`` runs; ``medseg ensemble`` CLI paths."""

from __future__ import annotations

import json

import numpy as np
import yaml
from PIL import Image

from medseg.cli import main
from medseg.data import write_synthetic_dataset
from medseg.engine.probabilities import save_probabilities


def test_plan_then_train_runs_as_written(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=8, size=32, seed=0)
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--out", str(plan), "--budget", "2m"]) == 0
    table = capsys.readouterr().out
    assert "dimensions" in table and "patch size" in table and "batch size" in table
    text = plan.read_text()
    assert text.startswith("# medseg plan of") and yaml.safe_load(text)["train"]["budget_minutes"] == 2
    out = tmp_path / "run"
    # the plan as written; only the run folder, the length and the logging are set for the test
    args = ["train", "-c", str(plan), "--out", str(out), "--epochs", "1", "--budget", "5s"]
    assert main([*args, "--set", "train.log_tensorboard=false"]) == 0
    assert (out / "checkpoints" / "last.safetensors").is_file()


def test_train_plan_auto_plans_then_trains_with_overrides_on_top(tmp_path, capsys):
    """`medseg train --plan auto --data D`: the run's config is the plan (as `medseg plan` writes
    it) with the command line's options on top; the decisions go to stderr."""
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=8, size=32, seed=0)
    plan_file = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--out", str(plan_file), "--budget", "2m"]) == 0
    planned = yaml.safe_load(plan_file.read_text())
    capsys.readouterr()
    out = tmp_path / "run"
    args = ["train", "--plan", "auto", "--data", str(root), "--budget", "2m", "--out", str(out)]
    assert main([*args, "--epochs", "1", "--set", "train.log_tensorboard=false", "--no-postprocess"]) == 0
    said = capsys.readouterr()
    assert "batch size" in said.err and "patch size" in said.err and "batch size" not in said.out
    run_cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: run_cfg["model"][k] for k in planned["model"]} == planned["model"]
    assert run_cfg["data"]["size"] == planned["data"]["size"]
    assert run_cfg["train"]["batch_size"] == planned["train"]["batch_size"]
    assert (
        run_cfg["train"]["epochs"] == 1 and run_cfg["train"]["budget_minutes"] == 2
    )  # the command line wins
    assert main(["train", "--plan", "auto", "--out", str(tmp_path / "r2")]) == 2
    assert "--plan auto needs --data" in capsys.readouterr().err


def test_train_with_only_data_plans_and_a_config_file_does_not(tmp_path, capsys):
    """`medseg train --data D` without -c trains the plan (and says so); with -c it trains the file."""
    root = write_synthetic_dataset(tmp_path / "d", "binary", n=8, size=32, seed=0)
    quick = ["--epochs", "1", "--budget", "1m", "--set", "train.log_tensorboard=false", "--no-postprocess"]
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "a"), *quick]) == 0
    said = capsys.readouterr().err
    assert "no -c given: planned from the data" in said and "patch size" in said
    run_cfg = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert run_cfg["model"]["options"]["norm"] == "instance" and run_cfg["loss"]["name"] == "deep_supervision"
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"model": {"name": "unet", "options": {"depth": 2, "base_width": 4}}}))
    args = ["train", "-c", str(own), "--data", str(root), "--out", str(tmp_path / "b"), *quick]
    assert main(args) == 0
    assert "patch size" not in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["model"]["options"] == {
        "depth": 2,
        "base_width": 4,
    }


def test_plan_json_goes_to_stdout(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "d", "multiclass", n=6, size=32, seed=0)
    assert main(["plan", str(root), "--out", str(tmp_path / "p.yaml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dims"] == "2d" and result["config"]["data"]["class_names"][0] == "background"
    assert {d["name"] for d in result["decisions"]} >= {"dimensions", "patch size", "normalisation"}


def test_plan_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope"), "--out", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg: error:") and "nope" in err and not (tmp_path / "p.yaml").exists()


def test_ensemble_from_probabilities_command(tmp_path):
    p = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)
    q = np.array([[[0.3, 0.6]], [[0.7, 0.4]]], np.float32)
    save_probabilities(tmp_path / "a" / "x.npz", p, case_id="x", channels=["bg", "fg"])
    save_probabilities(tmp_path / "b" / "x.npz", q, case_id="x", channels=["bg", "fg"])
    args = ["ensemble", "--from-probabilities", str(tmp_path / "a"), str(tmp_path / "b")]
    assert main([*args, "--out", str(tmp_path / "e")]) == 0
    # mean foreground: (0.1 + 0.7) / 2 = 0.4 -> bg; (0.8 + 0.4) / 2 = 0.6 -> fg (0/255 PNG)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "e" / "masks" / "x.png")), [[0, 255]])
