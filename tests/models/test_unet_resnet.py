"""U-Net with a ResNet encoder (unet_resnet): shapes, gradients, layout, parameter count."""

from __future__ import annotations

import pytest
import torch

from medseg.benchmark.presets import tiny_options
from medseg.inference import predict_proba
from medseg.models import MODELS, build_model, count_parameters

TINY = dict(backbone="resnet18", width_mult=0.125)


def test_registered_with_paper_and_summary():
    meta = MODELS.get("unet_resnet").meta
    assert "1505.04597" in meta["paper"] and meta["summary"]


@pytest.mark.parametrize("size", [(64, 96), (32, 32)])
def test_output_has_the_input_size(size):
    model = build_model("unet_resnet", 3, 4, **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 4, *size)


def test_odd_sizes_through_the_padding_predictor():
    model = build_model("unet_resnet", 1, 2, **tiny_options("unet_resnet")).eval()
    p = predict_proba(model, torch.randn(1, 1, 45, 77))
    assert p.shape == (1, 2, 45, 77)
    assert torch.allclose(p.sum(1), torch.ones(1, 45, 77), atol=1e-5)


def test_size_not_a_multiple_of_32_is_a_clear_error():
    model = build_model("unet_resnet", 3, 2, **TINY)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 64))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_every_parameter_receives_a_gradient(backbone):
    torch.manual_seed(0)
    model = build_model("unet_resnet", 3, 3, backbone=backbone, width_mult=0.0625).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_decoder_blocks_run_at_strides_16_8_4_2_1_with_the_given_widths():
    model = build_model(
        "unet_resnet", 3, 2, backbone="resnet18", decoder_widths=(40, 32, 24, 16, 8), width_mult=0.25
    ).eval()
    shapes = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # widths are scaled by width_mult like the encoder's
    assert shapes == [(10, 4, 4), (8, 8, 8), (6, 16, 16), (4, 32, 32), (2, 64, 64)]
    # first decoder conv takes the upsampled input plus the skip of that scale
    # (ResNet-18 at width 0.25: stem/layer1 16, layer2 32, layer3 64, layer4 128 channels)
    in_ch = [b.convs[0][0].in_channels for b in model.blocks]
    assert in_ch == [128 + 64, 10 + 32, 8 + 16, 6 + 16, 4]


def test_parameter_count_matches_the_common_resnet34_unet():
    # segmentation_models_pytorch 0.6.0, Unet(encoder_name="resnet34", classes=2): 24,436,514
    # parameters (counted with sum(p.numel() for p in model.parameters()) in the bench env);
    # its encoder is torchvision's resnet34 without the classifier: 21,797,672 - 513,000 = 21,284,672.
    model = build_model("unet_resnet", 3, 2)
    assert count_parameters(model.backbone) == 21_284_672
    assert count_parameters(model) == 24_436_514


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="ResNet backbone"):
        build_model("unet_resnet", 3, 2, backbone="mobilenetv2")
    with pytest.raises(ValueError, match="5 widths"):
        build_model("unet_resnet", 3, 2, decoder_widths=(64, 32, 16))


def test_prefers_channels_last_and_gives_the_same_output_in_it():
    torch.manual_seed(0)
    model = build_model("unet_resnet", 3, 2, **TINY).eval()
    assert model.preferred_memory_format == torch.channels_last
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_norm_none_gives_biased_convolutions():
    model = build_model("unet_resnet", 3, 2, norm="none", **TINY)
    assert all(b.convs[0][0].bias is not None and b.convs[1][0].bias is not None for b in model.blocks)
