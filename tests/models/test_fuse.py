"""Conv-BN folding (medseg.models.fuse): same eval outputs, BatchNorms gone, original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.benchmark.presets import tiny_options
from medseg.models import MODELS, build_model, list_models
from medseg.models.blocks import ConvNormAct
from medseg.models.fuse import count_batchnorms, fuse_conv_bn


def planar_models() -> list[str]:
    """Registered 2-D models (volumetric ones declare dims=3 and are tested in test_unet3d)."""
    return [n for n in list_models() if MODELS.get(n).meta.get("dims", 2) == 2]


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so that folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))


def _input_size(model: nn.Module, name: str) -> int:
    if callable(getattr(model, "valid_input_size", None)):
        return model.valid_input_size(8)
    return 96 if name.startswith("befunet") else 64


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # float32 rounding differs between (conv, then BN) and the folded conv: compare relative
    # to the output's scale
    scale = max(1.0, b.abs().max().item())
    assert (a - b).abs().max().item() <= 1e-4 * scale


# registered models whose default (tiny) configuration has no BatchNorm at all
NO_BATCHNORM = {"befunet", "befunet_small", "deeplabv1", "fcn8s", "fcn16s", "fcn32s"}
# further configurations with other backbones / blocks
EXTRA = {
    "fcn8s-vgg16_bn": ("fcn8s", dict(backbone="vgg16_bn", width_mult=0.125, fc_width=32)),
    "fcn32s-resnet-os8-head": (
        "fcn32s",
        dict(backbone="resnet50", width_mult=0.0625, output_stride=8, head_conv=16),
    ),
    "v3plus-mobilenetv2": ("deeplabv3plus", dict(backbone="mobilenetv2", width_mult=0.25)),
    "pspnet-layer2": (
        "pspnet",
        dict(backbone="resnet50", width_mult=0.0625, feature_layer="layer2", head_kernel=1),
    ),
    "unet_resnet-resnet50": ("unet_resnet", dict(backbone="resnet50", width_mult=0.0625)),
}
CASES = {name: (name, tiny_options(name)) for name in planar_models()} | EXTRA


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_model_matches_in_eval_and_has_no_batchnorm_after_a_conv(case):
    name, options = CASES[case]
    torch.manual_seed(0)
    model = build_model(name, 3, 2, **options)
    size = _input_size(model, name)
    x = torch.randn(2, 3, size, size)
    model.train()
    with torch.no_grad():  # a few training forwards update the running statistics
        for _ in range(2):
            model(x)
    _randomise_batchnorms(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = count_batchnorms(model)

    fused = fuse_conv_bn(model)

    assert fused is not model and not fused.training
    # every BatchNorm of the zoo follows a convolution
    assert count_batchnorms(fused) == 0
    assert (n_bn == 0) == (case in NO_BATCHNORM)
    with torch.no_grad():
        _close(fused(x), model(x))
    # the original is not mutated
    assert count_batchnorms(model) == n_bn
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unet_batch_norm_is_fully_folded_into_biased_convs():
    model = build_model("unet", 1, 2, base_width=4, depth=2, norm="batch")
    _randomise_batchnorms(model)
    convs = [m for m in model.modules() if isinstance(m, ConvNormAct)]
    fused = fuse_conv_bn(model)
    assert len(convs) > 0 and count_batchnorms(model) == len(convs)
    assert count_batchnorms(fused) == 0
    for block in (m for m in fused.modules() if isinstance(m, ConvNormAct)):
        assert isinstance(block[1], nn.Identity) and block[0].bias is not None


def test_inplace_returns_the_same_module_and_the_copy_leaves_the_original_in_train_mode():
    model = build_model("unet", 1, 2, base_width=4, depth=2).train()
    copy_fused = fuse_conv_bn(model)
    assert model.training and count_batchnorms(model) > 0 and not copy_fused.training
    same = fuse_conv_bn(model, inplace=True)
    assert same is model and count_batchnorms(model) == 0 and not model.training


def test_folding_equals_the_batchnorm_formula():
    """Independent reference: y = (conv(x) - mean) / sqrt(var + eps) * gamma + beta."""
    torch.manual_seed(1)
    block = ConvNormAct(3, 5, 3)
    _randomise_batchnorms(block, seed=3)
    block.eval()
    conv, bn = block[0], block[1]
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        y = conv(x)
        ref = torch.relu(
            (y - bn.running_mean[:, None, None])
            / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            * bn.weight[:, None, None]
            + bn.bias[:, None, None]
        )
        out = fuse_conv_bn(block)(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


class _SharedConv(nn.Module):
    """The conv output feeds the BN *and* a residual sum: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.bn1(y) + y


class _MyConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_pairs_that_are_not_a_plain_conv_then_bn_are_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(
        _SharedConv(),
        nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)),  # BN before the conv
        nn.Sequential(_MyConv(3, 3, 1), nn.BatchNorm2d(3)),  # a conv subclass with its own forward
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),  # the only foldable pair
    )
    _randomise_batchnorms(model)
    model.eval()
    fused = fuse_conv_bn(model)
    assert count_batchnorms(model) == 4 and count_batchnorms(fused) == 3
    assert isinstance(fused[3][1], nn.Identity)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        _close(fused(x), model(x))


def test_fused_model_runs_channels_last():
    model = build_model("deeplabv3plus", 3, 2, **tiny_options("deeplabv3plus"))
    _randomise_batchnorms(model)
    model.eval()
    fused = fuse_conv_bn(model).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(fused(x.contiguous(memory_format=torch.channels_last)), model(x))
