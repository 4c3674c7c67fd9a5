"""The statistics of bench/recipe_ablation.py: `python -m pytest -q bench/test_recipe_ablation.py`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).parent))
import recipe_ablation as ra  # noqa: E402

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_case_scores_average_the_foreground_classes_and_keep_undefined_hd95_undefined():
    records = [
        {"case": "a", "dice": 0.5, "hd95": 2.0},
        {"case": "a", "dice": 0.9, "hd95": 4.0},
        {"case": "b", "dice": 0.0, "hd95": float("nan")},
        {"case": "b", "dice": 0.6, "hd95": 1.0},
    ]
    out = ra.case_scores(records)
    assert out["a"] == {"dice": pytest.approx(0.7), "hd95": pytest.approx(3.0)}
    assert out["b"]["dice"] == pytest.approx(0.3) and math.isnan(out["b"]["hd95"])


def _run(scores: dict[str, float]) -> dict:
    return {"cases": {c: {"dice": v, "hd95": 1.0} for c, v in scores.items()}}


def test_seed_mean_makes_one_sample_per_case_over_the_cases_every_seed_scored():
    runs = [_run({"a": 0.2, "b": 0.4, "c": 1.0}), _run({"a": 0.4, "b": 0.8})]
    assert ra.seed_mean(runs, "dice") == pytest.approx({"a": 0.3, "b": 0.6})


def test_paired_counts_wins_in_the_metric_direction_and_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.random(12)
    y = x - 0.05 + 0.02 * rng.standard_normal(12)
    a = {str(i): float(v) for i, v in enumerate(x)}
    b = {str(i): float(v) for i, v in enumerate(y)}
    wins = int((x > y).sum())
    p = wilcoxon(x, y).pvalue
    assert ra.paired(a, b, higher_is_better=True) == f"{wins}/12, p={p:.2g}"
    assert ra.paired(a, b, higher_is_better=False) == f"{12 - wins}/12, p={p:.2g}"
    assert ra.paired(a, dict(a), True) == "identical (12 cases)"
    b["0"] = float("nan")  # a case without a value is left out of the pairing
    assert ra.paired(a, b, True).split(",")[0].endswith("/11")


def test_overrides_resolve_one_stage_fewer_from_the_plan(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("model:\n  name: unet\n  options:\n    depth: 5\n")
    over = ra.overrides_for("shallower", plan, 1, tmp_path / "run")
    assert "model.options.depth=4" in over and "train.seed=1" in over
    assert not any(o == "depth-1" for o in over)
    assert set(ra.VARIANTS["sgd_nesterov"][1]) <= set(ra.overrides_for("sgd_nesterov", plan, 0, tmp_path))


def test_the_preset_variant_trains_on_the_plans_data_folder_for_the_plans_budget(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "model: {name: unet, options: {depth: 5}}\ntrain: {budget_minutes: 15.0}\n"
        "data: {root: /d/ph2, split: {val_fraction: 0.15, seed: 0}}\n"
    )
    over = ra.overrides_for("preset", plan, 0, tmp_path / "run")
    assert 'data.root="/d/ph2"' in over and "train.budget_minutes=15.0" in over
    assert 'data.split={"val_fraction": 0.15, "seed": 0}' in over
    assert not any(o.startswith("data.root") for o in ra.overrides_for("baseline", plan, 0, tmp_path))
    with pytest.raises(SystemExit, match="--preset"):
        ra.run_one(plan, "preset", 0, tmp_path / "run", threads=1, preset=None)


@pytest.mark.parametrize("variant", [v for v in ra.VARIANTS if v != "preset"])
def test_every_variant_gives_a_config_whose_model_and_loss_build(variant, tmp_path):
    from medseg.config import load_config
    from medseg.losses import build_loss
    from medseg.models import build_model

    plan = REPO_CONFIGS / "unet_ph2.yaml"  # a preset is a plan (tests/plan/test_presets_are_plans.py)
    cfg = load_config(plan, ra.overrides_for(variant, plan, 0, tmp_path / "run"))
    build_loss(cfg.loss.name, mode="multiclass", **cfg.loss.options)
    model = build_model(cfg.model.name, 3, 2, **cfg.model.options).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
