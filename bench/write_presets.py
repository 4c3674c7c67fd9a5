"""Write the U-Net presets in configs/ as what ``medseg plan`` decides for their dataset.

Each preset keeps its data options (mask values, class names, region of interest, split) and
takes everything else from the plan of its dataset at the preset's budget: the default recipe
(`docs/bench/recipe.md`), so ``medseg train -c configs/unet_X.yaml`` trains what ``medseg train
--data DATA --budget B`` would. The data options are read from the preset itself, so running
this again re-plans with the same data description (after a planner change, for instance).

usage (from the repository root, with the shared data in ../shared/data or $MEDSEG_DATA):
  python bench/write_presets.py [unet_ph2 unet_drive ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("MEDSEG_DATA", "../shared/data")

# preset -> (dataset folder under the data root, budget, the first lines of its header)
PRESETS: dict[str, tuple[str, str, str]] = {
    "unet_ph2": ("ph2", "15m", "U-Net on PH2 dermoscopy (binary lesion segmentation, 64 images)."),
    "unet_drive": (
        "drive",
        "15m",
        "U-Net on DRIVE retinal vessels: official 20/20 split, crops at native resolution,\n"
        "# sliding-window inference, metrics inside the field of view (fov/).",
    ),
    "unet_busi": ("busi", "15m", "U-Net on the BUSI breast-ultrasound sample (binary lesion segmentation)."),
    "unet_isbi2012": (
        "isbi2012-em",
        "15m",
        "U-Net on ISBI 2012 EM: membranes (mask value 0) are the foreground class, as in the\n"
        "# U-Net paper's challenge; crops at native resolution.",
    ),
    "unet_acdc": (
        "acdc",
        "15m",
        "U-Net on ACDC cardiac MRI: trains on the 2-D slices (slices/), tests on the 3-D\n"
        "# volumes (volumes/), slice by slice, scored per volume.",
    ),
    "unet_acdc_regions": (
        "acdc",
        "15m",
        "U-Net on ACDC cardiac MRI, region-based (nnU-Net's region training for nested labels):\n"
        "# one sigmoid output per region, Dice + BCE per region, metrics per region. Labels: 1 RV,\n"
        "# 2 MYO, 3 LV. Regions: heart = RV + MYO + LV, epicardium = MYO + LV, LV = the cavity;\n"
        "# nested from the largest to the smallest, so the predicted regions paint back to the\n"
        "# label map exactly (later regions overwrite earlier ones).",
    ),
    "unet_kvasir": (
        "kvasir-seg-mini",
        "2m",
        "U-Net on the Kvasir-SEG sample (JPEG-noisy masks binarised at 128). Five images only:\n"
        "# a smoke-test preset, not a benchmark.",
    ),
    "unet_ham10000": (
        "ham10000-mini",
        "2m",
        "U-Net on the HAM10000 sample (five dermoscopy images): a smoke-test preset, not a benchmark.",
    ),
}

HEADER = """# {about}
# Written by bench/write_presets.py: `medseg plan` of this dataset at {budget} with this preset's
# data options; every other value is the plan's decision (the default recipe,
# docs/bench/recipe.md), so `medseg train -c configs/{name}.yaml` trains what
# `medseg train --data DATA --budget {budget}` would. The plan's own lines follow.
"""
# what a preset sets beyond the plan (the region preset's sigmoid-per-region loss)
EXTRA: dict[str, dict[str, dict]] = {"unet_acdc_regions": {"loss": {"mode": "multilabel"}}}


def write_preset(name: str) -> Path:
    """Plan the preset's dataset with its data options and write the plan as the preset."""
    from medseg.atomic import atomic_write_text
    from medseg.budget import parse_budget
    from medseg.config import load_config
    from medseg.plan import plan_dataset, plan_yaml

    folder, budget, about = PRESETS[name]
    target = REPO / "configs" / f"{name}.yaml"
    cfg = load_config(target, [f"data.root={DATA}/{folder}"])
    minutes = parse_budget(budget)
    root_text = "${MEDSEG_DATA:-../shared/data}/" + folder
    plan = plan_dataset(cfg.data, budget_minutes=minutes, root_text=root_text)
    plan.config.update(name=name.replace("_", "-"), output_dir=f"runs/{name}")
    for section, values in EXTRA.get(name, {}).items():
        plan.config[section] = {**plan.config[section], **values}
    load_config(plan.config)  # a preset that does not load is a bug: fail before writing
    header = HEADER.format(about=about, name=name, budget=budget)
    return atomic_write_text(target, header + plan_yaml(plan))


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        print(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    os.chdir(REPO)  # the data root is relative to the repository
    for name in names or list(PRESETS):
        print(f"wrote {write_preset(name).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
