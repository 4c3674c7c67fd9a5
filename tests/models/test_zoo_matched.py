"""Matched-design options (PSPNet as smp's, FCN-32s as torchvision's fcn_resnet50) and the
preferred memory format of the zoo models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.benchmark.presets import tiny_options
from medseg.errors import ConfigError
from medseg.models import MODELS, build_model, count_parameters, list_models
from medseg.models.base import format_input, resolve_memory_format, to_preferred_format


def planar_models() -> list[str]:
    """Registered 2-D models (volumetric ones declare dims=3 and are tested in test_unet3d)."""
    return [n for n in list_models() if MODELS.get(n).meta.get("dims", 2) == 2]


# ---------------------------------------------------------------- PSPNet, smp layout


def test_pspnet_layer2_variant_builds_no_later_stage_and_has_no_aux_head():
    model = build_model(
        "pspnet", 3, 2, backbone="resnet18", width_mult=0.125, feature_layer="layer2", head_kernel=1
    )
    assert isinstance(model.backbone.layer3, nn.Identity) and isinstance(model.backbone.layer4, nn.Identity)
    assert model.input_multiple == 8 and model.aux_head is None
    assert model.head[0][0].kernel_size == (1, 1)
    x = torch.randn(2, 3, 40, 56)  # multiples of 8 only
    logits, aux = model.train().forward_aux(x)
    assert logits.shape == (2, 2, 40, 56) and aux == {}
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pspnet_layer2_feeds_stride_8_features_to_the_pyramid():
    model = build_model("pspnet", 3, 2, backbone="resnet50", width_mult=0.0625, feature_layer="layer2").eval()
    seen = []
    model.ppm.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [(model.backbone.channels["layer2"], 8, 8)]


def test_pspnet_matches_smp_parameter_count_of_the_layers_it_runs():
    # smp 0.6.0 PSPNet(encoder_name="resnet50", classes=2) (encoder_depth=3, psp_dropout=0.2): 24,305,602
    # parameters, of which torchvision resnet50's layer3 (7,098,368) and layer4 (14,964,736) are built but
    # never run, and whose final 3x3 classifier (512 * 2 * 9 + 2) is 1x1 here (512 * 2 + 2).
    smp_run = 24_305_602 - 7_098_368 - 14_964_736
    expected = smp_run - 512 * 2 * 9 + 512 * 2
    model = build_model("pspnet", 3, 2, feature_layer="layer2", head_kernel=1, dropout=0.2)
    assert count_parameters(model) == expected


def test_pspnet_paper_defaults_are_unchanged():
    model = build_model("pspnet", 3, 2, backbone="resnet18", width_mult=0.125)
    assert model.feature_layer == "layer4" and model.aux_head is not None
    assert model.head[0][0].kernel_size == (3, 3) and model.input_multiple == 8
    assert not isinstance(model.backbone.layer4, nn.Identity)


def test_pspnet_bad_feature_layer_options():
    with pytest.raises(ValueError, match="feature_layer"):
        build_model("pspnet", 3, 2, feature_layer="layer1")
    with pytest.raises(ValueError, match="ResNet backbone"):
        build_model("pspnet", 3, 2, backbone="mobilenetv2", feature_layer="layer2")
    with pytest.raises(ValueError, match="head_kernel"):
        build_model("pspnet", 3, 2, backbone="resnet18", width_mult=0.125, head_kernel=5)


# ---------------------------------------------------------------- FCN, torchvision layout


def test_fcn32s_dilated_resnet50_with_head_matches_torchvision_fcn_resnet50_parameter_count():
    # torchvision 0.28 fcn_resnet50(weights=None, weights_backbone=None, num_classes=2, aux_loss=False):
    # 32,947,266 parameters (counted in the bench env)
    model = build_model("fcn32s", 3, 2, backbone="resnet50", output_stride=8, head_conv=512, dropout=0.1)
    assert count_parameters(model) == 32_947_266


def test_fcn32s_output_stride_8_scores_at_stride_8_and_upsamples_to_the_input():
    model = build_model(
        "fcn32s", 3, 2, backbone="resnet18", width_mult=0.125, output_stride=8, head_conv=16
    ).eval()
    assert model.input_multiple == 8
    seen = []
    model.score.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    x = torch.randn(1, 3, 48, 72)
    with torch.no_grad():
        out = model(x)
    assert seen == [(6, 9)] and out.shape == (1, 2, 48, 72)


def test_fcn_bilinear_final_upsampling_of_a_constant_score_is_constant_inside():
    """The x8 fixed upsampling is bilinear: a constant score map stays constant away from the border."""
    model = build_model("fcn32s", 3, 2, backbone="resnet18", width_mult=0.125, output_stride=8)
    up = model.upscore
    y = up(torch.ones(1, 2, 6, 6))
    assert y.shape == (1, 2, 48, 48)
    assert torch.allclose(y[..., 8:-8, 8:-8], torch.ones(1, 2, 32, 32), atol=1e-6)


def test_fcn_option_errors():
    with pytest.raises(ValueError, match="ResNet backbones only"):
        build_model("fcn32s", 3, 2, width_mult=0.125, fc_width=16, head_conv=8)
    with pytest.raises(ValueError, match="ResNet backbones only"):
        build_model("fcn32s", 3, 2, width_mult=0.125, fc_width=16, output_stride=8)
    with pytest.raises(ConfigError, match="output_stride"):  # skips need the undilated ResNet
        build_model("fcn8s", 3, 2, backbone="resnet18", output_stride=8)
    from medseg.models.fcn import FCNResNet

    with pytest.raises(ValueError, match="needs FCN-32s"):
        FCNResNet(3, 2, variant=8, backbone="resnet18", output_stride=8)


def test_fcn_paper_defaults_are_unchanged():
    model = build_model("fcn8s", 3, 2, backbone="resnet18", width_mult=0.125)
    assert isinstance(model.head, nn.Identity) and model.input_multiple == 32 and len(model.skips) == 2


# ---------------------------------------------------------------- memory format

CONTIGUOUS = {"befunet", "befunet_small"}  # Swin attention: channels_last does not help


@pytest.mark.parametrize("name", planar_models())
def test_preferred_memory_format_of_every_registered_model(name):
    model = build_model(name, 3, 2, **tiny_options(name))
    expected = torch.contiguous_format if name in CONTIGUOUS else torch.channels_last
    assert model.preferred_memory_format == expected
    assert resolve_memory_format(model) == expected


@pytest.mark.parametrize("name", planar_models())
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 2, **tiny_options(name)).eval()
    if callable(getattr(model, "valid_input_size", None)):
        size = model.valid_input_size(8)
    else:
        size = 96 if name.startswith("befunet") else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        to_preferred_format(model, True)
        out = model(format_input(x, model, True))
    scale = max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= 1e-4 * scale


def test_resolve_memory_format_settings():
    model = build_model("unet_resnet", 3, 2, backbone="resnet18", width_mult=0.125)
    assert resolve_memory_format(model, "auto") == torch.channels_last
    assert resolve_memory_format(model, None) == torch.channels_last
    assert resolve_memory_format(model, False) == torch.contiguous_format
    assert resolve_memory_format(model, "contiguous") == torch.contiguous_format
    assert resolve_memory_format(nn.Conv2d(1, 1, 1), "auto") == torch.contiguous_format
    assert resolve_memory_format(nn.Conv2d(1, 1, 1), True) == torch.channels_last
    assert resolve_memory_format(nn.Conv2d(1, 1, 1), "channels_last") == torch.channels_last

    class Wrapper(nn.Module):  # DDP-style: the model is .module
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    class AuxWrapper(nn.Module):  # the trainer's AuxForward: the model is .model
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

    assert resolve_memory_format(Wrapper(AuxWrapper(model))) == torch.channels_last
    assert resolve_memory_format(Wrapper(nn.Conv2d(1, 1, 1))) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory format"):
        resolve_memory_format(model, "nhwc")


def test_to_preferred_format_converts_weights_and_format_input_converts_images():
    model = build_model("unet_resnet", 3, 2, backbone="resnet18", width_mult=0.125)
    weight = model.backbone.conv1.weight
    assert to_preferred_format(model) is model
    assert model.backbone.conv1.weight is weight  # same parameter: an optimizer built before still works
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    x = format_input(torch.randn(2, 3, 32, 32), model)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = torch.randn(2, 32, 32)
    assert format_input(y, model) is y  # not an image batch: unchanged
