"""Benchmark runner: argument parsing, the cell grid, the report from saved cells, and a real
tiny run on the built-in phantom data that is killed halfway and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medseg.benchmark.cells import CELL_FILE, STATE_FILE, Cell, plan_cells
from medseg.benchmark.plan import make_plan, parse_losses, parse_models
from medseg.benchmark.report import build_report
from medseg.benchmark.runner import cell_overrides, run_benchmark, update_costs
from medseg.errors import ConfigError, MedsegError

TINY_CONFIG = {
    "data": {"format": "synthetic", "synthetic": {"n": 10, "size": 32}, "size": [32, 32]},
    "train": {"batch_size": 4, "device": "cpu"},
    "eval": {"overlays": 0, "surface": True},
    "augment": {"enabled": False},
}
MODELS = "unet:base_width=4:depth=2,segnet:width_mult=0.0625"
LOSSES = "dice_ce,focal"


def test_plan_budget_is_minutes_like_train(tmp_path):
    # one parser for every --budget: a plain number is minutes, as for `medseg train`
    kw = dict(models="unet:base_width=4", losses="dice", config=TINY_CONFIG)
    assert make_plan(budget="10", **kw)["budget_s"] == 600
    assert make_plan(budget=2, **kw)["budget_s"] == 120
    assert make_plan(budget="90s", **kw)["budget_s"] == 90
    assert make_plan(budget="1.5h", **kw)["budget_s"] == 5400
    for bad in ("ten minutes", "-5m", "0"):
        with pytest.raises(ConfigError, match="budget"):
            make_plan(budget=bad, **kw)


def test_parse_models_and_losses():
    assert parse_models("unet:base_width=8:depth=3, segnet") == [
        ("unet", {"base_width": 8, "depth": 3}),
        ("segnet", {}),
    ]
    assert parse_models({"unet": {"base_width": 4}}) == [("unet", {"base_width": 4})]
    with pytest.raises(ConfigError, match="unknown model 'unte'. Did you mean 'unet'"):
        parse_models("unte")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_models("unet,unet:base_width=4")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_models("unet:base_width")
    assert parse_losses("dice_ce,dice:1+focal:0.5") == ["dice_ce", "dice:1+focal:0.5"]
    with pytest.raises(ConfigError, match="unknown loss 'focall'.*Did you mean 'focal'"):
        parse_losses("dice,focall")


def test_plan_cells_and_overrides(tmp_path):
    cells = plan_cells(["unet", "segnet"], ["dice", "dice:1+focal:0.5"], folds=2)
    assert len(cells) == 8
    assert cells[0] == Cell("unet", "dice", 0) and cells[0].name == "unet__dice__fold0"
    assert cells[3].name == "unet__dice-1+focal-0.5__fold1"
    assert len({c.name for c in cells}) == 8
    plan = make_plan(
        models="unet:base_width=4",
        losses="dice",
        config=TINY_CONFIG,
        budget="2m",
        folds=3,
        overrides=["train.batch_size=2"],
    )
    assert plan["auto_overrides"] == ["data.split.test_fraction=0.2"]  # phantoms have no test split
    ov = cell_overrides(Cell("unet", "dice", 1), plan, tmp_path / "c", "cpu")
    assert 'model.options={"base_width": 4}' in ov and "loss.name=dice" in ov
    assert "train.budget_minutes=2" in ov and "train.epochs=100000" in ov
    assert ov[-1] == "train.batch_size=2"  # the user's overrides win
    if plan["fold_method"] == "kfold":
        assert "data.split.fold=1" in ov
    else:
        assert plan["fold_method"] == "repeated-holdout" and "data.split.seed=1" in ov
    with pytest.raises(ConfigError, match="budget .* or a number of epochs"):
        make_plan(models="unet", losses="dice", config=TINY_CONFIG)


def _fake_cell(out: Path, name: str, model: str, loss: str, fold, dice: list[float], params: int) -> None:
    records = [
        {"case": f"k{fold}_{i}", "class": "lesion", "dice": d, "iou": d / (2 - d), "hd95": 3.0, "assd": 1.0}
        for i, d in enumerate(dice)
    ]
    info = {
        "model": model,
        "loss": loss,
        "fold": fold,
        "params": params,
        "gflops": 0.5,
        "epochs": 3,
        "train_seconds": 10.0,
        "train_images_per_s": 20.0,
        "infer_images_per_s": 50.0 + params / 1e4,
        "peak_memory_mb": 100.0,
    }
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_dice": 0.5 + 0.1 * e, "epoch_seconds": 2.5}
        for e in (1, 2, 3)
    ]
    path = out / "cells" / name / CELL_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"cell": name, "info": info, "history": history, "records": records}))


def test_report_from_saved_cells_pools_folds(tmp_path):
    plan = make_plan(
        models="unet,segnet", losses="dice", config=TINY_CONFIG, epochs=1, folds=2, profile=False
    )
    (tmp_path / STATE_FILE).write_text(json.dumps({"plan": plan, "cells": []}))
    good = [0.9, 0.85, 0.8, 0.88, 0.92, 0.87]
    for fold in (0, 1):
        _fake_cell(tmp_path, f"unet__dice__fold{fold}", "unet", "dice", fold, good, 1_000_000)
        _fake_cell(
            tmp_path, f"segnet__dice__fold{fold}", "segnet", "dice", fold, [d - 0.1 for d in good], 2_000_000
        )
    rep = build_report(tmp_path)
    board = rep["board"]
    assert [r["cell"] for r in board["rows"]] == ["unet__dice", "segnet__dice"]
    assert board["rows"][0]["n_cases"] == 12  # both folds pooled, cases keyed by fold
    assert board["rows"][1]["p"] == pytest.approx(2 / 2**12)  # worse in all 12 paired cases
    assert board["rows"][1]["verdict"] == "worse"
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "leaderboard.html",
        "bars.png",
        "pareto.png",
        "curves.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    html = (tmp_path / "leaderboard.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # self-contained: figures embedded
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | unet | dice | 0.8700" in md and "worse (<0.001)" in md
    assert board["rows"][0]["train_seconds"] == 7.5  # from the epoch times of the log


def test_kfold_report_adds_the_cross_validated_board_with_every_case_once(tmp_path):
    """Out-of-fold records (each non-test case in exactly one fold) give a second leaderboard
    over all of them; the fixed test cases, scored by every fold, count once per case."""
    plan = make_plan(
        models="unet,segnet", losses="dice", config=TINY_CONFIG, epochs=1, folds=2, profile=False
    )
    (tmp_path / STATE_FILE).write_text(json.dumps({"plan": plan, "cells": []}))
    oof = {0: [0.9, 0.8, 0.7], 1: [0.95, 0.85]}  # fold k validates its own cases
    for model, shift in (("unet", 0.0), ("segnet", -0.2)):
        for fold in (0, 1):
            name = f"{model}__dice__fold{fold}"
            _fake_cell(tmp_path, name, model, "dice", fold, [0.9, 0.8], 1_000_000)
            path = tmp_path / "cells" / name / CELL_FILE
            cell = json.loads(path.read_text())
            cell["records"] = [{**r, "case": f"test{i}"} for i, r in enumerate(cell["records"])]
            cell["oof_records"] = [
                {
                    "case": f"f{fold}_{i}",
                    "class": "lesion",
                    "dice": d + shift,
                    "iou": 0.5,
                    "hd95": 1.0,
                    "assd": 1.0,
                }
                for i, d in enumerate(oof[fold])
            ]
            path.write_text(json.dumps(cell))
    rep = build_report(tmp_path)
    assert rep["board"]["rows"][0]["n_cases"] == 2  # the 2 test cases, each once over the folds
    board = rep["oof_board"]
    assert [r["cell"] for r in board["rows"]] == ["unet__dice", "segnet__dice"]
    assert board["rows"][0]["n_cases"] == 5  # every out-of-fold case once
    assert board["rows"][0]["dice"] == pytest.approx(sum(oof[0] + oof[1]) / 5)
    assert board["rows"][1]["p"] == pytest.approx(2 / 2**5)  # worse on all 5 paired cases
    assert (tmp_path / "leaderboard_oof.md").is_file() and (tmp_path / "leaderboard_oof.csv").is_file()
    assert "Cross-validated leaderboard" in (tmp_path / "leaderboard.html").read_text()


@pytest.mark.slow
def test_kfold_cells_score_their_out_of_fold_cases(tmp_path):
    """A real 2-fold run on phantoms: the folds' validation cases partition the non-test cases."""
    res = run_benchmark(tmp_path / "kf", folds=2, **{**_tiny_args(), "losses": "dice_ce"})
    assert not res["failed"]
    cells = [
        json.loads((tmp_path / "kf" / "cells" / f"unet__dice_ce__fold{k}" / CELL_FILE).read_text())
        for k in (0, 1)
    ]
    plan = json.loads((tmp_path / "kf" / STATE_FILE).read_text())["plan"]
    assert plan["fold_method"] == "kfold"
    oof = [{r["case"] for r in c["oof_records"]} for c in cells]
    test = {r["case"] for r in cells[0]["records"]}
    assert oof[0] and oof[1] and not oof[0] & oof[1] and not (oof[0] | oof[1]) & test
    assert len(oof[0] | oof[1]) + len(test) == 10  # 10 phantoms: every case in one place
    assert res["report"]["oof_board"]["rows"][0]["n_cases"] == len(oof[0] | oof[1])


def test_report_without_cells_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished benchmark cells"):
        build_report(tmp_path)


@pytest.mark.slow
def test_killed_benchmark_resumes_without_redoing_cells(tmp_path):
    out = tmp_path / "bench"
    args = dict(models=MODELS, losses=LOSSES, config=TINY_CONFIG, epochs=1, profile=False)
    script = textwrap.dedent(f"""
        from medseg.benchmark.runner import run_benchmark
        run_benchmark({str(out)!r}, **{args!r})
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    first = out / "cells" / "unet__dice_ce" / CELL_FILE
    deadline = time.monotonic() + 600
    try:
        while not first.is_file():
            if proc.poll() is not None:
                pytest.fail(f"benchmark exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("first cell did not finish in time")
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # killed halfway, as by an out-of-time job
        proc.wait()
    stamp = first.stat().st_mtime_ns
    state = json.loads((out / STATE_FILE).read_text())
    assert {c["name"]: c["status"] for c in state["cells"]}["unet__dice_ce"] == "done"

    res = run_benchmark(out, **args)
    assert "unet__dice_ce" in res["skipped"] and "unet__dice_ce" not in res["ran"]
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not redone
    assert sorted(res["done"]) == sorted(c.name for c in plan_cells(["unet", "segnet"], ["dice_ce", "focal"]))
    assert not res["failed"]
    state = json.loads((out / STATE_FILE).read_text())
    assert all(c["status"] == "done" for c in state["cells"])
    board = res["report"]["board"]
    assert len(board["rows"]) == 4 and board["rows"][0]["rank"] == 1
    assert all(r["n_cases"] == 2 for r in board["rows"])  # 20 % of 10 phantoms held out
    assert (out / "leaderboard.html").is_file() and (out / "curves.png").is_file()

    # a third run has nothing to do; changing a fixed setting is refused
    again = run_benchmark(out, report=False, **args)
    assert again["ran"] == [] and len(again["skipped"]) == 4
    with pytest.raises(MedsegError, match="epochs=1, now 2"):
        run_benchmark(out, **{**args, "epochs": 2})


def _tiny_args(**kw):
    return dict(
        models="unet:base_width=4:depth=2", losses=LOSSES, config=TINY_CONFIG, epochs=1, profile=False, **kw
    )


@pytest.mark.slow
def test_process_pool_runs_cells_in_parallel(tmp_path):
    res = run_benchmark(tmp_path / "pool", workers=2, report=False, **_tiny_args())
    assert sorted(res["ran"]) == ["unet__dice_ce", "unet__focal"] and not res["failed"]
    state = json.loads((tmp_path / "pool" / STATE_FILE).read_text())
    assert [c["status"] for c in state["cells"]] == ["done", "done"]
    # the cost columns can be measured afterwards (profile=False above): one profile per model
    assert update_costs(tmp_path / "pool") == 2
    infos = [
        json.loads((tmp_path / "pool" / "cells" / n / CELL_FILE).read_text())["info"] for n in res["ran"]
    ]
    assert all(i["gflops"] > 0 and i["infer_images_per_s"] > 0 and i["peak_memory_mb"] > 0 for i in infos)
    assert len(list((tmp_path / "pool" / "profiles").iterdir())) == 1


@pytest.mark.slow
def test_ranks_share_the_cells_like_torchrun(tmp_path):
    """Two processes with torchrun's environment: each trains its own cell, rank 0 reports."""
    out = tmp_path / "ranks"
    script = f"from medseg.benchmark.runner import run_benchmark\nrun_benchmark({str(out)!r}, **{_tiny_args()!r})\n"
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29533",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err.decode()[-2000:]
    for name in ("unet__dice_ce", "unet__focal"):
        assert (out / "cells" / name / CELL_FILE).is_file()
    assert (out / "leaderboard.md").is_file()  # written by rank 0 after both ranks finished
    assert not (out / "ranks").exists()
    dice = json.loads((out / "cells" / "unet__dice_ce" / CELL_FILE).read_text())
    assert dice["info"]["device"] == "cpu"
