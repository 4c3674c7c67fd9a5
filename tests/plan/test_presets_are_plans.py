"""The U-Net presets in configs/ are the plan of their dataset (bench/write_presets.py writes
them): every training decision in a preset is what ``medseg plan`` decides for that dataset today,
so a planner change that is not followed by re-running the script fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.config import load_config
from medseg.plan import plan_dataset

CONFIGS = Path(__file__).parents[2] / "configs"
# the sections the plan decides (data options such as mask values and the split are the preset's)
DECIDED = ("model", "loss", "optim", "schedule", "augment")
DECIDED_TRAIN = ("batch_size", "budget_minutes", "val_every", "epochs")
DECIDED_DATA = ("size", "resize_policy", "normalize", "train_repeats")


@pytest.mark.parametrize(("preset", "folder"), [("unet_ph2", "ph2"), ("unet_drive", "drive")])
def test_preset_is_the_plan_of_its_dataset(real_data, preset, folder):
    path = CONFIGS / f"{preset}.yaml"
    written = yaml.safe_load(path.read_text())
    cfg = load_config(path, [f"data.root={real_data(folder)}"])
    plan = plan_dataset(cfg.data, budget_minutes=written["train"]["budget_minutes"]).config
    for section in DECIDED:
        assert written.get(section) == plan.get(section), f"{preset}: {section} differs from the plan"
    for key in DECIDED_TRAIN:
        assert written["train"][key] == plan["train"][key], f"{preset}: train.{key}"
    for key in DECIDED_DATA:
        assert written["data"].get(key) == plan["data"].get(key), f"{preset}: data.{key}"
    # the default recipe itself (docs/bench/recipe.md): deep supervision, AdamW + poly, batch 2
    assert written["model"]["options"]["deep_supervision"] is True
    assert written["loss"] == {"name": "deep_supervision", "options": {"base": "dice_ce"}}
    assert (written["optim"]["name"], written["schedule"]["name"]) == ("adamw", "poly")
