"""The U-Net presets in configs/: each builds its model, loss and optimiser, and its training
size suits the model (H and W multiples of ``input_multiple``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config import load_config
from medseg.engine.trainer import build_optimizer
from medseg.losses import build_loss
from medseg.models import build_model

CONFIGS = Path(__file__).parent.parent / "configs"
UNET_PRESETS = sorted(p.name for p in CONFIGS.glob("unet_*.yaml"))


@pytest.mark.parametrize("name", UNET_PRESETS)
def test_unet_preset_builds_model_loss_and_optimiser(name):
    cfg = load_config(CONFIGS / name)
    model = build_model(cfg.model.name, 3, 2, **cfg.model.options)
    for side in cfg.data.size:
        if cfg.data.resize_policy != "pad":
            assert side % model.input_multiple == 0, (
                f"{name}: data.size {cfg.data.size} vs {model.input_multiple}"
            )
    loss = build_loss(cfg.loss.name, mode="multiclass", ignore_index=255, **cfg.loss.options)
    opt = build_optimizer(cfg, model)
    assert opt.param_groups[0]["lr"] == cfg.optim.lr
    if getattr(loss, "uses_aux", False):
        # the loss consumes the model's deep-supervision outputs: they must exist
        x = torch.zeros(1, 3, *(model.input_multiple * 2,) * 2)
        _, aux = model.eval().forward_aux(x)
        assert aux.get("deep_supervision"), f"{name}: deep_supervision loss without deep-supervision heads"
