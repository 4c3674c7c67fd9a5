"""``medseg plan``: a ready-to-train configuration decided from the data alone.

nnU-Net's idea (Isensee et al., Nature Methods 2021): a fingerprint of the data set (modality,
intensities, spacings, shapes, classes) fixes target spacing, patch and batch size, network
topology, normalisation and 2-D vs 3-D by rules. Here the GPU-memory target is replaced by a CPU
time budget (:mod:`medseg.plan.cost`), and thin structures limit how much an image may be
shrunk (:func:`medseg.plan.rules.downsample_limit`). Every decision carries its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.config import DataConfig
from medseg.data.fingerprint import fingerprint
from medseg.errors import ConfigError, DataError
from medseg.plan.config import UNET2D, UNET3D, build_config, three_d_trainable
from medseg.plan.cost import MIN_STEPS, forward_flops_per_voxel, max_step_seconds
from medseg.plan.patch import PatchPlan, fit_patch
from medseg.plan.rules import (
    DIMS,
    RESAMPLABLE,
    choose_dims,
    downsample_limit,
    mask_threshold,
    normalisation,
    uniform_sizes,
)
from medseg.plan.spacing import target_spacing


@dataclass
class Decision:
    """One planned setting, its value as text and the reason."""

    name: str
    value: str
    reason: str


@dataclass
class Plan:
    """What ``medseg plan`` decided: the configuration (a dict ``medseg.load_config`` accepts),
    the decisions with their reasons, and the fingerprint they came from."""

    dims: str
    config: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: Any, reason: str) -> None:
        self.decisions.append(Decision(name, value if isinstance(value, str) else str(value), reason))


@dataclass
class Geometry:
    """Per-case shapes and spacings (array-axis order) of the axes being planned."""

    shapes: np.ndarray  # [N, axes]
    spacings: np.ndarray | None  # [N, axes] or None when the files have none
    volumes: bool
    mixed: bool = False  # 2-D images and volumes together: planned as 2-D slices
    resamplable: bool = False  # the files carry a geometry that data.target_spacing can resample


def _geometry(fp: dict[str, Any]) -> Geometry:
    shapes = [s for s in fp.get("case_shapes") or []]
    if not shapes:
        raise DataError(f"{fp['root']}: no readable cases to plan from")
    if len({len(s) for s in shapes}) > 1:  # e.g. SSL4MIS ACDC: slices/ to train, volumes/ to test
        slices = [s[-2:] for s in shapes for _ in range(s[0] if len(s) == 3 else 1)]
        return Geometry(np.asarray(slices, float), None, False, mixed=True)
    spacings = fp.get("case_spacings")
    return Geometry(
        np.asarray(shapes, float),
        None if spacings is None else np.asarray(spacings, float),
        len(shapes[0]) == 3,
        resamplable=fp.get("format") in RESAMPLABLE,
    )


def _spacing_plan(geo: Geometry, dims: str, plan: Plan) -> tuple[list[float | None], np.ndarray]:
    """Target spacing (None: an axis kept at each case's own spacing) and each case's shape at
    it. nnU-Net's 2-D configuration resamples in-plane only; the slice axis stays native."""
    if geo.spacings is None:
        plan.add("target spacing", "native (1 per voxel)", "no spacing in the files: voxels are the unit")
        return [None] * geo.shapes.shape[1], geo.shapes
    if not geo.resamplable:
        plan.add("target spacing", "native", "arrays without an orientation are not resampled")
        return [None] * geo.shapes.shape[1], geo.shapes
    target, lowres = target_spacing(geo.spacings, geo.shapes)
    planned: list[float | None] = list(target)
    reason = "median of the cases' spacings"
    if dims == "2d" and geo.volumes:
        planned[0] = None
        reason = "in-plane: median of the cases' spacings; slice axis: each case's own (2-D plan)"
    elif lowres is not None:
        reason += f"; axis {lowres} anisotropic: its 10th percentile (nnU-Net's rule)"
    plan.add("target spacing", _fmt_spacing(planned), reason)
    scale = np.asarray([1.0 if t is None else t for t in planned])
    own = np.where([t is None for t in planned], 1.0, geo.spacings)
    return planned, geo.shapes * own / scale


def flops_2d(in_ch: int, classes: int, unet: dict[str, Any] = UNET2D) -> Any:
    """Forward FLOPs per pixel of the 2-D U-Net with options ``unet`` (the plan's by default), as a
    function of the strides ``fit_patch`` tries (their number sets the depth)."""
    cache: dict[int, float] = {}

    def per_voxel(strides: list[list[int]]) -> float:
        depth = max(1, sum(1 for s in strides[1:] if all(v == 2 for v in s)))
        if depth not in cache:
            cache[depth] = forward_flops_per_voxel("unet", {**unet, "depth": depth}, in_ch, classes)
        return cache[depth]

    return per_voxel


def _flops_3d(in_ch: int, classes: int) -> Any:
    cache: dict[str, float] = {}

    def per_voxel(strides: list[list[int]]) -> float:
        key = repr(strides)
        if key not in cache:
            kernels = [[3] * 3 for _ in strides]
            opts = {**UNET3D, "kernel_sizes": kernels, "strides": strides}
            cache[key] = forward_flops_per_voxel("unet3d", opts, in_ch, classes)
        return cache[key]

    return per_voxel


# Images of differing sizes are cropped at native resolution only while a crop covers at least
# 1 / MAX_CROP_SHRINK**2 of the median image; beyond, they are shrunk (keeping the aspect ratio,
# padded) as far as the thinnest class allows. Measured (docs/bench/recipe.md): ACDC slices at
# 1.24x (crop 224 x 160 of 256 x 216) trained well; BUSI at 2.7x (160 x 224 crops of 471 x 564
# ultrasound images) did not learn in 10 min (validation Dice 0.18).
MAX_CROP_SHRINK = 1.5


def _fit_2d(
    geo: Geometry, shapes: np.ndarray, spacing: list[float], fp: dict, budget: float, plan: Plan, ch: int
) -> tuple[PatchPlan, str, float]:
    """Patch, batch and resize policy of a 2-D plan; returns (patch plan, policy, shrink factor)."""
    median = np.median(shapes[:, -2:], axis=0)
    pixels = float(np.prod(shapes, axis=1).sum())
    flops = flops_2d(ch, fp["num_classes"])
    cap = max_step_seconds(budget, "2d")
    native = fit_patch(median, spacing[-2:], flops, cap, pixels)
    same = uniform_sizes(shapes[:, -2:])
    if all(p >= m for p, m in zip(native.patch, median)):
        policy = "resize" if same else "crop"
        plan.add("resize policy", policy, "the median image fits the budget whole")
        return native, policy, 1.0
    limit, why = downsample_limit(fp.get("class_thickness"))
    whole = float(np.prod(median))
    needed = math.sqrt(whole / float(np.prod(native.patch)))
    # same sizes: stretch to the patch; differing sizes: crop while the crop still shows most of
    # the image (nnU-Net's 2-D patch is the whole image), else scale keeping the aspect and pad
    policy = "resize" if same else ("pad" if needed > MAX_CROP_SHRINK else "crop")
    if policy != "crop" and limit >= needed:
        shrunk = fit_patch(median / needed, spacing[-2:], flops, cap, pixels / needed**2)
        factor = float(np.max(median / np.asarray(shrunk.patch)))
        how = "" if same else f"; images differ in size and a crop would show 1/{needed**2:.1f} of one"
        plan.add(
            "resize policy",
            f"{policy} (shrink {factor:.2f}x)",
            f"{why}; the whole image needs {needed:.2f}x{how}",
        )
        return shrunk, policy, factor
    reason = (
        why if same or policy == "pad" else f"images differ in size (crops show 1/{needed**2:.1f} of one)"
    )
    plan.add("resize policy", "crop (native resolution)", f"{reason}; whole images would need {needed:.2f}x")
    return native, "crop", 1.0


def _fit_3d(shapes: np.ndarray, spacing: Sequence[float], fp: dict, budget: float, ch: int) -> PatchPlan:
    median = np.median(shapes, axis=0)
    voxels = float(np.prod(shapes, axis=1).sum())
    return fit_patch(
        median, spacing, _flops_3d(ch, fp["num_classes"]), max_step_seconds(budget, "3d"), voxels
    )


def plan_dataset(
    data: DataConfig | str | Path,
    *,
    budget_minutes: float = 15.0,
    dims: str = "auto",
    root_text: str | None = None,
    max_cases: int | None = None,
) -> Plan:
    """Plan training on ``data`` for a CPU budget of ``budget_minutes``; see the module docstring.

    ``root_text``: how the data root is written in the config (e.g. ``${MEDSEG_DATA}/ph2``).
    """
    if dims not in DIMS:
        raise ConfigError(f"--dims must be one of {', '.join(DIMS)}, got {dims!r}")
    cfg = data if isinstance(data, DataConfig) else DataConfig(root=Path(data))
    plan = Plan("2d", {})
    cfg, fp = _fingerprint(cfg, max_cases, plan)
    geo = _geometry(fp)
    channels = max(fp["channels"], key=lambda k: fp["channels"][k])
    ch = int(channels) if cfg.in_channels is None else cfg.in_channels
    plan.dims, why = _dims(dims, geo)
    plan.decisions.insert(0, Decision("dimensions", plan.dims, why))
    spacing, shapes = _spacing_plan(geo, plan.dims, plan)
    topo = _topology_spacing(spacing, geo)
    if plan.dims == "3d":
        fitted, policy, factor = _fit_3d(shapes, topo, fp, budget_minutes, ch), "crop", 1.0
    else:  # in-plane axes at the target spacing; slices stay slices
        fitted, policy, factor = _fit_2d(geo, shapes, topo, fp, budget_minutes, plan, ch)
    norm, clip, norm_why = normalisation(fp["intensity"], int(channels))
    steps = budget_minutes * 60 / max(fitted.step_seconds, 1e-9)
    plan.add(
        "patch size",
        _fmt(fitted.patch),
        f"median shape {_fmt(np.median(shapes, 0))} at the target spacing"
        + (f", shrunk {factor:.2f}x" if factor > 1 else "")
        + f"; fitted so that {MIN_STEPS[plan.dims]} steps fit {budget_minutes:g} min on CPU (cost model)",
    )
    plan.add(
        "batch size",
        fitted.batch,
        f"predicted {fitted.step_seconds:.2f} s/step on the reference 2-core CPU, about {steps:.0f} steps "
        "in the budget (min 2, at most 5 % of the data per step)",
    )
    plan.add("normalisation", norm + (f", clip {clip}" if clip else ""), norm_why)
    plan.config = build_config(
        cfg, fp, plan, fitted, policy=policy, norm=(norm, clip), budget=budget_minutes, root_text=root_text
    )
    if geo.resamplable and any(v is not None for v in spacing):
        plan.config["data"]["target_spacing"] = [None if v is None else round(v, 5) for v in spacing]
    return plan


def _fingerprint(cfg: DataConfig, max_cases: int | None, plan: Plan) -> tuple[DataConfig, dict[str, Any]]:
    """The data config (with a mask threshold when the masks need one) and its fingerprint.

    Binary masks stored lossily (JPEG) have values around 0 and 255 that no class mapping
    names: the plan thresholds them at 128 (:func:`mask_threshold`) and fingerprints again. Any
    other problem (an unreadable file, unmapped mask values) stops the plan: training would
    stop on it later."""
    fp = fingerprint(cfg, max_cases=max_cases)
    if fp["class_mapping"] is None and cfg.mask_threshold is None and cfg.mask_values is None:
        threshold, why = mask_threshold(fp["mask_values"])
        if threshold is not None:
            cfg = cfg.model_copy(update={"mask_threshold": threshold})
            fp = fingerprint(cfg, max_cases=max_cases)
            plan.add("mask threshold", f"{threshold:g}", why)
    if fp["problems"]:
        more = (
            f" (and {len(fp['problems']) - 1} more problem(s); see medseg info)"
            if len(fp["problems"]) > 1
            else ""
        )
        raise DataError(fp["problems"][0] + more)
    if fp["num_labelled"] == 0:  # after the problems: a mask that fails to read names its file
        raise DataError(f"{fp['root']}: no masks found; a plan needs labelled cases")
    plan.fingerprint = fp
    return cfg, fp


def _dims(requested: str, geo: Geometry) -> tuple[str, str]:
    """2-D or 3-D and why (:func:`choose_dims`; images mixed with volumes are planned 2-D)."""
    if geo.mixed:
        if requested == "3d":
            raise ConfigError(
                "--dims 3d: the data mix 2-D images and 3-D volumes; a 3-D network needs volumes only"
            )
        return "2d", "2-D images and 3-D volumes together: 2-D, the volumes slice by slice"
    median_sp = None if geo.spacings is None else np.median(geo.spacings, 0).tolist()
    chosen, why = choose_dims(
        requested, geo.volumes, median_sp, np.median(geo.shapes, 0), three_d_trainable()
    )
    if chosen == "3d" and not three_d_trainable():
        raise ConfigError("--dims 3d: this medseg build's config has no 3-D patch training (data.patch_size)")
    return chosen, why


def _topology_spacing(planned: list[float | None], geo: Geometry) -> list[float]:
    """The spacing the network topology is planned for: the target, else the cases' median, else 1."""
    median = [1.0] * len(planned) if geo.spacings is None else np.median(geo.spacings, 0).tolist()
    return [float(m if t is None else t) for t, m in zip(planned, median)]


def _fmt(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.4g}" for v in values)


def _fmt_spacing(values: Sequence[float | None]) -> str:
    return " x ".join("native" if v is None else f"{float(v):.4g}" for v in values)
