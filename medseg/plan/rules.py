"""The planner's data-only rules that need no network: 2-D or 3-D, normalisation, downsampling.

Each rule returns its value and the reason printed in the plan's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.data.labels import LOSSY_MASK_THRESHOLD, lossy_binary_counts
from medseg.errors import ConfigError
from medseg.plan.spacing import ANISOTROPY_THRESHOLD, anisotropy

DIMS = ("auto", "2d", "3d")  # medseg plan --dims

MIN_THICKNESS_PX = 4.0  # a structure must stay this many pixels thick after downsampling
UNIFORM_SHAPES = 1.25  # images whose sizes differ by less than this ratio per axis are "same size"
CT_AIR = -500.0  # values below this (air is -1000 HU) mark CT in Hounsfield units
CT_DENSE = 300.0  # ... together with values above this (bone)
RESAMPLABLE = ("nifti", "itk")  # formats whose files carry the geometry data.target_spacing needs


def choose_dims(
    requested: str,
    volumes: bool,
    median_spacing: Sequence[float] | None,
    median_shape: Sequence[float],
    three_d_trainable: bool,
) -> tuple[str, str]:
    """``"2d"`` or ``"3d"`` and why (nnU-Net: 3-D for volumes unless their slices are thick).

    ``requested`` ("auto", "2d", "3d": ``medseg plan --dims``) other than "auto" forces the
    answer; the reason then says so, followed by what the data rule alone would have chosen."""
    if requested not in DIMS:
        raise ConfigError(f"--dims must be one of {', '.join(DIMS)}, got {requested!r}")
    if not volumes:
        if requested == "3d":
            raise ConfigError("--dims 3d: the data are 2-D images; a 3-D network needs volumes")
        return "2d", _forced(requested, "2d", "the data are 2-D images")
    if median_spacing is not None:
        ratio = anisotropy(median_spacing)
        thick = ratio > ANISOTROPY_THRESHOLD
        why = f"median spacing {_fmt(median_spacing)}: anisotropy {ratio:.2f} " + (
            f"> {ANISOTROPY_THRESHOLD:g} (thick slices)" if thick else f"<= {ANISOTROPY_THRESHOLD:g}"
        )
    else:
        depth, inplane = float(median_shape[0]), float(min(median_shape[1:]))
        thick = depth * ANISOTROPY_THRESHOLD < inplane
        why = f"no spacing in the files; median shape {_fmt(median_shape)}: " + (
            "few slices (a thick-slice stack)" if thick else "as many slices as in-plane voxels"
        )
    if thick:
        ruled, why = "2d", why + " -> 2-D slice-wise, as nnU-Net prefers for anisotropic data"
    elif not three_d_trainable:
        ruled, why = "2d", why + " -> 3-D preferred, but this medseg build trains volumes slice-wise only"
    else:
        ruled, why = "3d", why + " -> 3-D"
    return (ruled if requested == "auto" else requested), _forced(requested, ruled, why)


def _forced(requested: str, ruled: str, why: str) -> str:
    """The reason of a dims decision: the data rule's, or ``forced by --dims`` and the rule's."""
    if requested == "auto":
        return why
    agree = "agrees" if requested == ruled else f"would choose {ruled}"
    return f"forced by --dims {requested} (the data rule {agree}: {why})"


def normalisation(intensity: dict[str, Any] | None, channels: int) -> tuple[str, list[float] | None, str]:
    """``data.normalize``, ``data.intensity_clip`` and why (nnU-Net: z-score; CT clipped first).

    CT is recognised by Hounsfield units: one channel with values below -500 and above 300.
    nnU-Net clips CT to the foreground's 0.5-99.5 percentiles and z-scores with global statistics;
    here the clip uses all voxels' percentiles (the fingerprint's) and the z-score is per case.
    """
    if intensity is None:
        return "zscore", None, "no intensities read; per-case z-score"
    if channels == 1 and intensity["min"] <= CT_AIR and intensity["max"] >= CT_DENSE:
        clip = [round(intensity["p0_5"], 3), round(intensity["p99_5"], 3)]
        if clip[0] < clip[1]:
            return (
                "zscore",
                clip,
                f"CT-like (values {intensity['min']:.0f} .. {intensity['max']:.0f} look like HU): "
                f"clipped to the 0.5-99.5 % percentiles {clip}, then z-score",
            )
    kind = "RGB" if channels == 3 else "MR-like / other"
    return "zscore", None, f"{kind} intensities: per-case z-score (nnU-Net's default for non-CT)"


def downsample_limit(thickness: dict[str, float | None] | None) -> tuple[float, str]:
    """How much the images may be shrunk: the thinnest class's thickness / MIN_THICKNESS_PX (>= 1)."""
    if not thickness:
        return 1.0, "class thickness unknown: no downsampling"
    present = {k: v for k, v in thickness.items() if v is not None}
    if not present:
        return 1.0, "no labelled pixels: no downsampling"
    name = min(present, key=lambda k: present[k])
    limit = max(1.0, present[name] / MIN_THICKNESS_PX)
    return limit, (
        f"thinnest class '{name}' is {present[name]:.1f} px thick (2 x area / contour); "
        f"keeping it >= {MIN_THICKNESS_PX:g} px allows shrinking by {limit:.2f}x"
    )


def mask_threshold(values: Sequence[int]) -> tuple[float | None, str]:
    """A threshold for binary masks saved lossily (JPEG), or None; and why
    (the rule: :func:`medseg.data.labels.lossy_binary_counts`)."""
    counts = lossy_binary_counts(values)
    if counts is None:
        return None, ""
    low, high, middle = counts
    return LOSSY_MASK_THRESHOLD, (
        f"{low + high + middle} mask values, {low} near 0 and {high} near 255 ({middle} between): "
        f"a binary mask saved lossily (JPEG); values >= {LOSSY_MASK_THRESHOLD:g} are foreground"
    )


def uniform_sizes(shapes: np.ndarray) -> bool:
    """True when every axis's largest case is at most UNIFORM_SHAPES x its smallest."""
    return bool((shapes.max(0) <= UNIFORM_SHAPES * shapes.min(0)).all())


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)
