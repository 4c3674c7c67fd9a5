"""A plan's decisions written as a medseg configuration (a dict that ``medseg.load_config`` takes).

Fixed choices, with their reasons in the plan's table: Dice + cross-entropy (nnU-Net's loss), for
2-D plans with deep supervision (1x1 heads on the U-Net's decoder stages, weights halving per
level: in docs/bench/recipe.md it raised ACDC's Dice from 0.593 to 0.678 at 15 CPU-minutes, 20 of 20
volumes, tied on PH2 and cost DRIVE 0.01 Dice while lowering its HD95) and medseg's light
augmentation (flips, small affine, brightness/contrast, gamma: never lower Dice than nnU-Net's
augmentation alone on PH2, DRIVE and ACDC, and with deep supervision 0.745 against 0.678 on ACDC),
AdamW at 1e-3 with poly decay (medseg's CPU-budget recipe: in docs/bench/recipe.md nnU-Net's SGD
at 1e-2 scored lower under a short budget), training stopped by
the time budget (``train.budget_minutes``, which also sets the learning-rate schedule's length);
2-D plans predict with mirroring TTA over the axes the augmentation mirrored, as nnU-Net does
(:mod:`medseg.engine.mirroring`; measured neutral on PH2, one extra forward pass: recipe.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.data.config import DataConfig
from medseg.plan.patch import PatchPlan

if TYPE_CHECKING:
    from medseg.plan.planner import Plan

UNET2D = {  # half nnU-Net's widths: more steps in a CPU budget (medseg.plan.cost, MIN_STEPS)
    "base_width": 16,
    "max_width": 256,
    "norm": "instance",
    "act": "leaky_relu",
    "downsample": "strided",
}
UNET3D = {"base_width": 32, "max_width": 320, "norm": "instance", "act": "leaky_relu"}
VALIDATIONS = 10  # validations per run under the budget
VAL_FRACTION = 0.15
TEST_FRACTION = 0.2


def three_d_trainable() -> bool:
    """Whether this build's data config can describe 3-D patch training (a ``patch_size`` field)."""
    return "patch_size" in DataConfig.model_fields


def _data_section(cfg: DataConfig, fp: dict, root_text: str | None) -> dict[str, Any]:
    """The user's data options as given (format, thresholds...), plus classes and split."""
    data = cfg.model_dump(mode="json", exclude_unset=True)
    data["root"] = root_text or str(cfg.root)
    data["format"] = fp["format"]
    data["class_names"] = list(fp["class_names"])
    mapping = fp.get("class_mapping")
    if cfg.mask_threshold is None and mapping and any(int(k) != v for k, v in mapping.items()):
        data["mask_values"] = {int(k): int(v) for k, v in mapping.items()}
    has_files = (fp.get("split") or {}).get("source") == "split files"
    split = dict(data.get("split") or {})
    split.setdefault("val_fraction", VAL_FRACTION)
    if not has_files:
        split.setdefault("test_fraction", TEST_FRACTION)
    split.setdefault("seed", 0)
    data["split"] = split
    for key in ("cache", "validate_on_load"):  # the fingerprint's read options, not the user's
        data.pop(key, None)
    return data


def _schedule(fp: dict, fitted: PatchPlan, repeats: int, budget: float, dims: str) -> tuple[int, int]:
    """``train.epochs`` (a ceiling: the budget stops training first) and ``train.val_every``."""
    items = fp["num_slices"] if dims == "2d" else fp["num_cases"]  # 2-D trains on slices
    train_items = max(1, round(items * (1 - VAL_FRACTION - TEST_FRACTION)))
    steps_per_epoch = max(1, math.ceil(train_items * repeats / fitted.batch))
    steps = budget * 60 / max(fitted.step_seconds, 1e-9)
    epochs = max(1.0, steps / steps_per_epoch)
    return max(10, 4 * math.ceil(epochs)), max(1, round(epochs / VALIDATIONS))


def _model(plan: Plan, fitted: PatchPlan) -> dict[str, Any]:
    if plan.dims == "3d":
        opts = {**UNET3D, "kernel_sizes": fitted.kernels, "strides": fitted.strides}
        plan.add(
            "network",
            "unet3d " + _stages(fitted),
            "nnU-Net topology (plan_topology) of the patch and spacing",
        )
        return {"name": "unet3d", "options": opts}
    depth = max(1, fitted.uniform_depth)
    plan.add(
        "network",
        f"unet depth {depth} ({_stages(fitted)}), widths {UNET2D['base_width']} -> {UNET2D['max_width']}",
        f"plan_topology: halve while an axis keeps >= 4 px (bottleneck {_bottleneck(fitted, depth)}); "
        "half nnU-Net's widths: more steps per CPU-minute (docs/bench/recipe.md)",
    )
    return {"name": "unet", "options": {**UNET2D, "depth": depth, "init": "he", "deep_supervision": True}}


def _stages(fitted: PatchPlan) -> str:
    return f"{len(fitted.strides)} stages, strides {fitted.strides[1:]}"


def _bottleneck(fitted: PatchPlan, depth: int) -> str:
    return " x ".join(str(p // 2**depth) for p in fitted.patch)


def build_config(
    cfg: DataConfig,
    fp: dict,
    plan: Plan,
    fitted: PatchPlan,
    *,
    policy: str,
    norm: tuple[str, list[float] | None],
    budget: float,
    root_text: str | None,
) -> dict[str, Any]:
    """The configuration dict of a plan (validated by the caller with ``medseg.load_config``)."""
    data = _data_section(cfg, fp, root_text)
    data["normalize"], clip = norm
    if clip is not None:
        data["intensity_clip"] = clip
    median_area = float(np.median([s[-1] * s[-2] for s in fp["case_shapes"]]))
    repeats = 1
    if plan.dims == "3d":
        data["patch_size"] = fitted.patch
        data["resize_policy"] = "crop"
    else:
        data["size"] = fitted.patch[-2:]
        data["resize_policy"] = policy
        if policy == "crop":
            repeats = max(1, round(median_area / math.prod(fitted.patch[-2:])))
            data["train_repeats"] = repeats
    epochs, val_every = _schedule(fp, fitted, repeats, budget, plan.dims)
    name = (cfg.root.name if cfg.root is not None else "synthetic") + f"-plan-{plan.dims}"
    out: dict[str, Any] = {
        "name": name,
        "output_dir": f"runs/{name}",
        "model": _model(plan, fitted),
        # 2-D: Dice + CE at every scale of the deep-supervision heads (model option in _model)
        "loss": {"name": "deep_supervision", "options": {"base": "dice_ce"}}
        if plan.dims == "2d"
        else {"name": "dice_ce"},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
        "schedule": {"name": "poly", "warmup_epochs": 0},
        "train": {
            "epochs": epochs,
            "batch_size": fitted.batch,
            "budget_minutes": budget,
            "val_every": val_every,
            "device": "cpu",
            "seed": 0,
        },
        "data": data,
        "augment": {"preset": "custom"} if plan.dims == "2d" else {},
    }
    if plan.dims == "2d":
        # mirroring TTA over the axes the training mirrored (medseg.engine.mirroring), as nnU-Net
        out["eval"] = {"tta": True, **({"window": fitted.patch[-2:]} if policy == "crop" else {})}
        plan.add(
            "loss",
            "dice_ce, deep supervision",
            "Dice + cross-entropy (nnU-Net's loss) at every decoder scale, weights halving per level "
            "(docs/bench/recipe.md)",
        )
    else:
        plan.add("loss", "dice_ce", "Dice + cross-entropy, nnU-Net's loss")
    plan.add("optimiser", "AdamW 1e-3, poly", "medseg's CPU-budget recipe (docs/bench/recipe.md)")
    if plan.dims == "2d":
        plan.add(
            "augmentation",
            "light (custom preset)",
            "flips, small affine, brightness/contrast, gamma: with deep supervision it beat nnU-Net's "
            "augmentation on ACDC (docs/bench/recipe.md)",
        )
        plan.add(
            "test-time augmentation",
            "mirroring of the trained axes",
            "as nnU-Net: the probabilities averaged over the flips the augmentation used (horizontal "
            "only by default: 2 passes); 3-D plans leave it off (8 passes on a CPU)",
        )
    else:
        plan.add(
            "augmentation", "augment defaults", "medseg's 3-D patch augmentation (medseg.data.transforms3d)"
        )
    plan.add(
        "training length", f"{budget:g} min", f"stopped by the budget; validation every {val_every} epoch(s)"
    )
    return out
