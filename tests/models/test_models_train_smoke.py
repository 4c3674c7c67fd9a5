"""Every model trains on real data: a few Adam steps on PH2 dermoscopy images lower the loss.

Needs ``MEDSEG_DATA`` (the shared data root); skipped otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medseg.models import build_model

TINY: dict[str, dict] = {
    "fcn32s": dict(width_mult=0.125, fc_width=64, dropout=0.0),
    "fcn16s": dict(width_mult=0.125, fc_width=64, dropout=0.0),
    "fcn8s": dict(width_mult=0.125, fc_width=64, dropout=0.0),
    "unet": dict(base_width=8, depth=3),
    "unet_valid": dict(base_width=8, depth=2),
    "segnet": dict(width_mult=0.125),
    "pspnet": dict(backbone="resnet18", width_mult=0.25, dropout=0.0),
    "deeplabv1": dict(width_mult=0.125, fc_width=64, dropout=0.0),
    "deeplabv2": dict(backbone="resnet18", width_mult=0.25),
    "deeplabv3": dict(backbone="resnet18", width_mult=0.25, dropout=0.0),
    "deeplabv3plus": dict(backbone="mobilenetv2", width_mult=0.5, dropout=0.0),
}


@pytest.fixture(scope="module")
def ph2_batch(real_data):
    folder = real_data("ph2")
    ids = sorted(p.stem for p in (folder / "images").glob("*.png"))[:3]
    assert len(ids) == 3, f"PH2 under {folder} has fewer than 3 images"
    images, masks = [], []
    for i in ids:
        img = Image.open(folder / "images" / f"{i}.png").convert("RGB").resize((64, 64), Image.BILINEAR)
        mask = Image.open(folder / "masks" / f"{i}.png").convert("L").resize((64, 64), Image.NEAREST)
        images.append(np.asarray(img, np.float32) / 255.0)
        masks.append(np.asarray(mask) > 127)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    y = torch.from_numpy(np.stack(masks)).long()
    assert 0 < y.float().mean() < 1  # both lesion and skin present
    return x, y


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_adam_steps_lower_the_loss(name, ph2_batch):
    x, y = ph2_batch
    torch.manual_seed(0)
    model = build_model(name, 3, 2, **TINY[name]).train()
    target = model.crop_target(y) if hasattr(model, "crop_target") else y
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        logits, aux = model.forward_aux(x)
        loss = F.cross_entropy(logits, target)
        if "aux" in aux:  # PSPNet deep supervision, weight 0.4
            loss = loss + 0.4 * F.cross_entropy(aux["aux"], target)
        return loss

    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.9 * losses[0], f"{name}: {losses}"
