"""nnU-Net plain-conv and residual-encoder U-Nets in 3-D (and 2-D from the same blocks): topology
planning, shapes and gradients at non-cubic patches, anisotropic pooling, deep supervision,
parameter counts against a hand computation, registry options. Widths are tiny: 3-D convs are
slow on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import build_model, count_parameters
from medseg.models.unet3d import PlainConvUNet, build_plain_unet, plan_topology

KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
TINY = dict(kernel_sizes=KERNELS, strides=STRIDES, base_width=4, max_width=8, blocks_per_stage=(1, 1, 1))
SIZE = (20, 28, 36)  # not cubic, not powers of two; divisible by (2, 4, 4)


def _tiny(name: str, **options):
    opts = dict(TINY, **options)
    if name == "unet3d":
        opts.pop("blocks_per_stage")
    return build_model(name, 1, 3, **opts)


def test_plan_topology_isotropic_halves_every_axis_down_to_a_4_voxel_bottleneck():
    kernels, strides = plan_topology((128, 128, 128), (1.0, 1.0, 1.0))
    assert kernels == [[3, 3, 3]] * 6
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 5  # 128 -> 4


def test_plan_topology_anisotropic_pools_in_plane_until_the_spacing_evens_out():
    # spacing 3 x 1 x 1: z is not pooled and has kernel 1 until in-plane spacing reaches 2 (3 / 2 < 2);
    # at the last stage y (7 voxels) is too small and only z and x (10, 9) are halved
    kernels, strides = plan_topology(SIZE, (3.0, 1.0, 1.0))
    assert strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 1, 2]]
    assert kernels == [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    # thick slices (3.75x): the first stage pools in-plane only, with a 1x3x3 kernel
    kernels, strides = plan_topology((80, 192, 160), (3.0, 0.8, 0.8), max_stages=4)
    assert strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels[0] == [1, 3, 3] and kernels[1:] == [[3, 3, 3]] * 3


def test_plan_topology_single_axis_and_stage_limits():
    # a lone poolable axis needs 12 voxels (1.5 x min_size): 4 x 4 x 12 halves x once, 4 x 4 x 11 never
    assert plan_topology((4, 4, 12))[1] == [[1, 1, 1], [1, 1, 2]]
    assert plan_topology((4, 4, 11)) == ([[3, 3, 3]], [[1, 1, 1]])
    assert len(plan_topology((256, 256, 256), max_stages=3)[1]) == 3


def test_plan_topology_rejects_mismatched_spacing():
    with pytest.raises(ValueError, match="per axis"):
        plan_topology((32, 32, 32), (1.0, 1.0))


@pytest.mark.parametrize("name", ["unet3d", "unet3d_resenc", "unet3d_resenc_l"])
def test_every_3d_model_keeps_the_shape_and_passes_gradients(name):
    torch.manual_seed(0)
    model = _tiny(name, deep_supervision=True).train()
    x = torch.randn(1, 1, *SIZE, requires_grad=True)
    logits, aux = model.forward_aux(x)
    assert logits.shape == (1, 3, *SIZE)
    assert [tuple(t.shape) for t in aux["deep_supervision"]] == [(1, 3, 20, 14, 18)]
    (logits.square().mean() + sum(t.square().mean() for t in aux["deep_supervision"])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_anisotropic_strides_pool_in_plane_first():
    kernels, strides = plan_topology((8, 32, 32), (4.0, 1.0, 1.0))
    model = PlainConvUNet(1, 2, kernel_sizes=kernels, strides=strides, base_width=2, max_width=4)
    with torch.no_grad():
        feats = model.encode(torch.randn(1, 1, 8, 32, 32))
    shapes = [tuple(f.shape[2:]) for f in feats]
    # spacing 4,1,1 -> 4,2,2 -> 4,4,4: z (not under 2x the smallest) waits for two in-plane
    # halvings, with 1x3x3 kernels, before all axes halve together
    assert shapes == [(8, 32, 32), (8, 16, 16), (8, 8, 8), (4, 4, 4)]
    first_convs = [stage[0][0] for stage in model.encoders]
    assert [c.kernel_size for c in first_convs] == [(1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)]
    assert [c.stride for c in first_convs] == [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2)]


def test_forward_aux_gives_deep_supervision_at_every_decoder_level():
    torch.manual_seed(0)
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    model = build_model(
        "unet3d", 1, 2, kernel_sizes=[[3, 3, 3]] * 4, strides=strides, base_width=2, deep_supervision=True
    ).eval()
    x = torch.randn(2, 1, 8, 24, 16)
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
        plain = model(x)
    assert torch.equal(plain, logits)
    assert [tuple(t.shape) for t in aux["deep_supervision"]] == [(2, 2, 8, 12, 8), (2, 2, 4, 6, 4)]
    assert model.input_multiples == (4, 8, 8) and model.input_multiple == 8


def test_nnunet_layers_and_losses_accept_deep_supervision():
    from medseg.losses import build_loss

    model = _tiny("unet3d", deep_supervision=True)
    kinds = {type(m) for m in model.modules()}
    assert {nn.InstanceNorm3d, nn.LeakyReLU, nn.ConvTranspose3d} <= kinds
    assert not kinds & {nn.ReLU, nn.BatchNorm3d, nn.MaxPool3d}
    loss_fn = build_loss("deep_supervision", mode="multiclass", ignore_index=255)
    x = torch.randn(1, 1, *SIZE)
    target = torch.randint(0, 3, (1, *SIZE))
    logits, aux = model.forward_aux(x)
    assert torch.isfinite(loss_fn(logits, target, aux=aux))


def test_small_plain_config_parameter_count_matches_a_hand_count():
    model = build_model(
        "unet3d", 1, 2, kernel_sizes=[[1, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2]], base_width=2
    )
    # widths 2, 4; convs have no bias under instance norm (affine: 2 per channel)
    enc0 = (1 * 2 * 9 + 4) + (2 * 2 * 9 + 4)  # 1x3x3 kernels
    enc1 = (2 * 4 * 27 + 8) + (4 * 4 * 27 + 8)
    up = 4 * 2 * (1 * 2 * 2) + 2  # transposed conv, kernel = stride (1, 2, 2), with bias
    dec0 = (4 * 2 * 9 + 4) + (2 * 2 * 9 + 4)
    head = 2 * 2 + 2
    assert count_parameters(model) == enc0 + enc1 + up + dec0 + head == 882


def test_small_residual_config_parameter_count_matches_a_hand_count():
    model = build_model(
        "unet3d_resenc",
        1,
        2,
        kernel_sizes=[[1, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2]],
        base_width=2,
        blocks_per_stage=(1, 2),
    )
    stem = 1 * 2 * 9 + 4
    stage0 = 2 * (2 * 2 * 9 + 4)  # one block, no projection
    block1 = (2 * 4 * 27 + 8) + (4 * 4 * 27 + 8) + (2 * 4 + 8)  # strided, 1x1 projection + norm
    block2 = 2 * (4 * 4 * 27 + 8)
    up = 4 * 2 * 4 + 2
    dec0 = 4 * 2 * 9 + 4  # ResEnc decoders have one convolution per stage
    head = 2 * 2 + 2
    assert count_parameters(model) == stem + stage0 + block1 + block2 + up + dec0 + head == 1778


def test_full_size_presets_match_the_published_sizes():
    # nnU-Net's 3-D full-resolution PlainConvUNet at 128^3 (6 stages, 32 -> 320): about 31 M
    assert count_parameters(build_model("unet3d", 1, 3)) == pytest.approx(31.2e6, rel=0.01)
    resenc = build_model("unet3d_resenc", 1, 3)
    assert [len(stage) for stage in resenc.encoders[1:]] == [1, 3, 4, 6, 6, 6]
    assert resenc.widths == [32, 64, 128, 256, 320, 320]


def test_2d_builds_are_unchanged_and_the_same_blocks_build_a_2d_plain_unet():
    # parameter counts of the 2-D U-Net before the blocks took a dims argument (commit 51b2ac8)
    assert count_parameters(build_model("unet", 3, 2)) == 31037698
    plain = dict(norm="instance", act="leaky_relu", downsample="strided", max_width=512, init="he")
    assert count_parameters(build_model("unet", 3, 2, deep_supervision=True, **plain)) == 20551688
    model = build_plain_unet(1, 2, patch_size=(24, 40), dims=2, base_width=2, deep_supervision=True)
    assert all(not isinstance(m, nn.Conv3d) for m in model.modules())
    logits, aux = model.forward_aux(torch.randn(1, 1, 24, 40))
    assert logits.shape == (1, 2, 24, 40)
    # 24 x 40 -> 6 x 10: a lone poolable axis (10) needs 12 voxels, so planning stops
    assert model.strides == [[1, 1], [2, 2], [2, 2]]
    assert [tuple(t.shape[2:]) for t in aux["deep_supervision"]] == [(12, 20)]


def test_registry_rejects_unknown_and_fixed_options():
    with pytest.raises(ConfigError, match="depth"):
        build_model("unet3d", 1, 2, depth=4)
    with pytest.raises(ConfigError, match="blocks_per_stage"):
        build_model("unet3d", 1, 2, blocks_per_stage=(1, 1))
    with pytest.raises(ConfigError, match="n_convs"):
        build_model("unet3d_resenc", 1, 2, n_convs=3)
    with pytest.raises(ConfigError, match="dims"):
        build_model("unet3d_resenc_l", 1, 2, dims=2)


def test_bad_topologies_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="both"):
        build_model("unet3d", 1, 2, strides=STRIDES)
    with pytest.raises(ValueError, match="one entry per stage"):
        build_model("unet3d", 1, 2, kernel_sizes=KERNELS[:2], strides=STRIDES)
    with pytest.raises(ValueError, match="3 entries"):
        build_model("unet3d", 1, 2, kernel_sizes=[[3, 3]] * 3, strides=STRIDES)
    with pytest.raises(ValueError, match="odd"):
        build_model("unet3d", 1, 2, kernel_sizes=[[2, 2, 2]] * 3, strides=STRIDES)
    with pytest.raises(ValueError, match="patch_size"):
        build_model("unet3d", 1, 2, patch_size=(64, 64))
    model = _tiny("unet3d")
    with pytest.raises(ValueError, match="D, H, W"):
        model(torch.randn(1, 1, 20, 28))
    with pytest.raises(ValueError, match=r"divisible by \(2, 4, 4\)"):
        model(torch.randn(1, 1, 20, 28, 30))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 2, *SIZE))


@pytest.mark.parametrize("name", ["unet3d", "unet3d_resenc", "unet3d_resenc_l"])
def test_3d_models_declare_dims_and_run_contiguous(name):
    from medseg.models import MODELS
    from medseg.models.base import to_preferred_format

    assert MODELS.get(name).meta["dims"] == 3
    torch.manual_seed(0)
    model = _tiny(name).eval()
    x = torch.randn(1, 1, *SIZE)
    with torch.no_grad():
        ref = model(x)
        assert model.preferred_memory_format == torch.contiguous_format
        assert torch.equal(to_preferred_format(model)(x), ref)
