"""Deep supervision on the zoo's other stage-wise decoders: ResNet U-Net and SegNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.losses import build_loss
from medseg.models import build_model

SMALL = {
    "unet_resnet": dict(backbone="resnet18", width_mult=0.125, decoder_widths=(32, 16, 16, 8, 8)),
    "segnet": dict(width_mult=0.125),
}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_forward_aux_gives_logits_at_scales_half_to_sixteenth(name, size):
    torch.manual_seed(0)
    model = build_model(name, 3, 2, deep_supervision=True, **SMALL[name]).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
        plain = model(x)
    h, w = size
    assert logits.shape == (2, 2, h, w)
    assert [tuple(t.shape) for t in aux["deep_supervision"]] == [
        (2, 2, h // 2**i, w // 2**i) for i in range(1, 5)
    ]
    assert torch.equal(plain, logits)  # forward stays the plain full-resolution logits


@pytest.mark.parametrize("name", sorted(SMALL))
def test_without_deep_supervision_the_state_dict_has_no_extra_heads(name):
    model = build_model(name, 3, 2, **SMALL[name]).eval()
    assert not any(k.startswith("deep_heads") for k in model.state_dict())
    assert model.forward_aux(torch.randn(1, 3, 32, 32))[1] == {}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deep_supervision_loss_falls_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 1, deep_supervision=True, **SMALL[name]).train()
    loss_fn = build_loss("deep_supervision", mode="binary")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # smooth blobs (8 x 8 noise upsampled): a target every scale of the decoder can follow
    x = F.interpolate(torch.randn(4, 3, 8, 8), size=(64, 64), mode="bilinear", align_corners=False)
    target = (x[:, 0] > 0).long()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        logits, aux = model.forward_aux(x)
        loss = loss_fn(logits, target, aux=aux)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]
