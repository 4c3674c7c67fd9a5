"""U-Net options that build nnU-Net's 2-D PlainConvUNet: norms, activations, strided convs,
width cap, depth from the patch size, deep-supervision heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.losses import build_loss
from medseg.models import build_model, count_parameters
from medseg.models.unet import UNet, depth_for_size, stage_widths

PLAIN = dict(norm="instance", act="leaky_relu", downsample="strided", max_width=64, init="he")


@pytest.mark.parametrize(
    ("size", "min_bottleneck", "depth"),
    [
        ((192, 256), 4, 5),
        ((128, 160), 4, 5),
        (64, 4, 4),
        (63, 4, 3),
        ((512, 512), 4, 7),
        (96, 8, 3),
        (7, 4, 0),
    ],
)
def test_depth_for_size_keeps_the_bottleneck_at_4_to_8_pixels(size, min_bottleneck, depth):
    assert depth_for_size(size, min_bottleneck=min_bottleneck) == depth
    side = min(size) if isinstance(size, tuple) else size
    assert side // 2**depth >= min_bottleneck
    assert side // 2 ** (depth + 1) < min_bottleneck


def test_stage_widths_double_up_to_the_cap():
    assert stage_widths(6, 32, 512) == [32, 64, 128, 256, 512, 512, 512]
    assert stage_widths(3, 16) == [16, 32, 64, 128]


def test_default_options_build_the_same_network_as_before():
    # the published U-Net (norm none, width 64, depth 4): 31.03 M parameters, max-pool, ReLU
    model = build_model("unet", 1, 2, norm="none")
    assert count_parameters(model) == pytest.approx(31.03e6, rel=1e-3)
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU in kinds and nn.LeakyReLU not in kinds and model.deep_heads is None
    assert all(c.stride == (1, 1) for c in model.modules() if isinstance(c, nn.Conv2d))
    x = torch.randn(1, 1, 32, 32)
    logits, aux = model.forward_aux(x)
    assert aux == {} and logits.shape == (1, 2, 32, 32)


def test_plain_conv_options_build_the_nnunet_layers():
    model = UNet(3, 2, depth=3, base_width=16, **PLAIN)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(n.affine for n in norms)
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.01 for a in acts)
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) for m in model.modules())
    # the first convolution of every deeper encoder stage has stride 2; widths capped at 64
    assert [enc[0][0].stride for enc in model.encoders] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [enc[1][0].out_channels for enc in model.encoders] == [16, 32, 64, 64]
    assert all(isinstance(u, nn.ConvTranspose2d) for u in model.ups)


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (128, 160)])
def test_forward_aux_returns_deep_supervision_logits_at_every_decoder_scale(size):
    torch.manual_seed(0)
    depth = depth_for_size(size)
    model = UNet(3, 2, depth=depth, base_width=4, deep_supervision=True, **PLAIN).eval()
    x = torch.randn(2, 3, *size)
    logits, aux = model.forward_aux(x)
    h, w = size
    assert logits.shape == (2, 2, h, w)
    assert [tuple(t.shape) for t in aux["deep_supervision"]] == [
        (2, 2, h // 2**i, w // 2**i) for i in range(1, depth)
    ]
    with torch.no_grad():
        assert torch.equal(model(x), logits)  # forward stays the plain full-resolution logits


def test_he_init_matches_kaiming_normal_statistics():
    torch.manual_seed(0)
    model = UNet(3, 2, depth=2, base_width=64, init="he", norm="instance", act="leaky_relu")
    conv = model.decoders[0][0][0]  # 3x3, 256 -> 128 channels (fan_in 2304)
    expected = (2 / (1 + 0.01**2) / conv.weight[0].numel()) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert all(m.bias is None or not m.bias.any() for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    "options", [dict(norm="instance", act="leaky_relu"), dict(PLAIN, deep_supervision=True)]
)
def test_instance_norm_leaky_variants_train_a_step(options):
    torch.manual_seed(0)
    model = build_model("unet", 3, 1, depth=3, base_width=8, **options).train()
    loss_name = "deep_supervision" if options.get("deep_supervision") else "dice_ce"
    loss_fn = build_loss(loss_name, mode="binary", ignore_index=255)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(2, 3, 32, 32)
    target = (x[:, :1] > 0).long()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits, aux = model.forward_aux(x)
    loss = loss_fn(logits, target, aux=aux) if loss_fn.uses_aux else loss_fn(logits, target)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    unchanged = {n for n, p in model.named_parameters() if torch.equal(before[n], p)}
    # nnU-Net gives the lowest-resolution output weight 0: only its head stays as initialised
    assert unchanged == (
        {"deep_heads.0.weight", "deep_heads.0.bias"} if options.get("deep_supervision") else set()
    )


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="act"):
        UNet(3, 2, act="gelu")
    with pytest.raises(ValueError, match="downsample"):
        UNet(3, 2, downsample="avgpool")
    with pytest.raises(ValueError, match="max_width"):
        UNet(3, 2, base_width=64, max_width=32)
    with pytest.raises(ValueError, match="init"):
        UNet(3, 2, init="xavier")
