"""The 2-D resize policy for images of differing sizes: crop while a crop shows most of the image,
else shrink keeping the aspect ratio (pad), as far as the thinnest class allows."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from medseg.config import load_config
from medseg.plan import plan_dataset
from medseg.plan.planner import MAX_CROP_SHRINK

SHAPES = [(200, 240), (240, 300), (220, 260), (260, 320), (210, 250), (250, 310)]  # median 230 x 285


def _differing_sizes(root, thickness_divisor: int = 2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(SHAPES):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"c{k}.png")
        m = np.zeros((h, w), np.uint8)
        if thickness_divisor == 2:  # one large blob: shrinking is allowed
            m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        else:  # 2-px lines: no shrinking
            m[::thickness_divisor, :] = 255
        Image.fromarray(m).save(root / "masks" / f"c{k}.png")
    return root


def _needed(size) -> float:
    """How much the median image must shrink to fit the planned size (the planner's `needed`)."""
    return math.sqrt(230 * 285 / math.prod(size))


def test_a_small_crop_of_differing_images_becomes_an_aspect_keeping_shrink(tmp_path):
    plan = plan_dataset(_differing_sizes(tmp_path / "d"), budget_minutes=2)
    data = plan.config["data"]
    assert data["resize_policy"] == "pad" and _needed(data["size"]) > MAX_CROP_SHRINK
    reason = {d.name: d.reason for d in plan.decisions}["resize policy"]
    assert "images differ in size" in reason
    assert "window" not in plan.config["eval"]  # whole images: no window
    load_config(plan.config)


def test_a_crop_showing_most_of_the_image_stays_a_crop(tmp_path):
    plan = plan_dataset(_differing_sizes(tmp_path / "d"), budget_minutes=15)
    data = plan.config["data"]
    assert data["resize_policy"] == "crop" and 1 < _needed(data["size"]) <= MAX_CROP_SHRINK
    assert plan.config["eval"]["window"] == data["size"]


def test_thin_structures_are_cropped_at_native_resolution_whatever_the_crop(tmp_path):
    plan = plan_dataset(_differing_sizes(tmp_path / "d", thickness_divisor=6), budget_minutes=2)
    data = plan.config["data"]
    assert data["resize_policy"] == "crop" and _needed(data["size"]) > MAX_CROP_SHRINK
