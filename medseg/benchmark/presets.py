"""Tiny model settings for CPU benchmarks, smoke tests and export checks.

``tiny_options(name)`` picks small widths and depths for the options a model's builder
accepts (matched by option name, so models added later get sensible values too).
Accuracy at these widths says little about the full models: use them to exercise the
pipeline, and the defaults (or the paper settings) for real comparisons.
"""

from __future__ import annotations

from typing import Any

from medseg.models import MODELS

# by option name; only options the builder accepts are used
_TINY_BY_OPTION: dict[str, Any] = {
    "base_width": 8,
    "depth": 3,
    "width_mult": 0.125,
    "fc_width": 64,
    "aspp_width": 32,
    "low_level_width": 12,
    "decoder_width": 32,
    "head_width": 32,
    "decoder_channels": 16,
    "embed_dim": 24,
    "depths": (1, 1, 1, 1),
    "backbone": "resnet18",
    "dlf_depths": (1, 1),
    "edge_blocks": 1,
    "drop_path_rate": 0.0,
}
# per model, on top of the above
_TINY_BY_MODEL: dict[str, dict[str, Any]] = {
    "befunet": {"num_heads": (1, 2, 4, 8), "window_size": 4, "lcaf_window": 4, "img_size": 96},
    "befunet_small": {"num_heads": (1, 2, 4, 8), "window_size": 4, "lcaf_window": 4, "img_size": 96},
}


def tiny_options(name: str, **override: Any) -> dict[str, Any]:
    """Small options for the registered model ``name`` (``override`` wins)."""
    entry = MODELS.get(name)
    params = entry.signature().parameters
    opts = {k: v for k, v in _TINY_BY_OPTION.items() if k in params}
    opts.update({k: v for k, v in _TINY_BY_MODEL.get(entry.name, {}).items() if k in params})
    if "backbone" in opts:
        # keep the default backbone when the model does not offer resnet18
        default = params["backbone"].default
        if isinstance(default, str) and not default.startswith("resnet"):
            opts.pop("backbone")
    opts.update(override)
    return opts
