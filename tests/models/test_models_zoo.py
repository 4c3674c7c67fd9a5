"""The classic model zoo: shapes, gradients, published parameter counts, architecture details."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError
from medseg.inference import predict_proba
from medseg.models import build_model, count_parameters, list_models
from medseg.models.fcn import FixedBilinearUpsample, bilinear_kernel, bilinear_upsampler

# tiny versions of every model (as CI smoke runs use them)
TINY: dict[str, dict] = {
    "fcn32s": dict(width_mult=0.125, fc_width=128),
    "fcn16s": dict(width_mult=0.125, fc_width=128),
    "fcn8s": dict(width_mult=0.125, fc_width=128),
    "unet": dict(base_width=4, depth=3),
    "unet_valid": dict(base_width=4, depth=2),
    "segnet": dict(width_mult=0.0625),
    "pspnet": dict(backbone="resnet18", width_mult=0.125),
    "deeplabv1": dict(width_mult=0.125, fc_width=128),
    "deeplabv2": dict(backbone="resnet18", width_mult=0.125),
    "deeplabv3": dict(backbone="resnet18", width_mult=0.125),
    "deeplabv3plus": dict(backbone="resnet18", width_mult=0.125),
}
EXTRA = {  # other backbones of the same families
    "fcn8s-resnet": ("fcn8s", dict(backbone="resnet18", width_mult=0.125)),
    "fcn16s-resnet": ("fcn16s", dict(backbone="resnet34", width_mult=0.125)),
    "v3plus-mobilenet": ("deeplabv3plus", dict(backbone="mobilenetv2", width_mult=0.25)),
    "v3-mobilenet": ("deeplabv3", dict(backbone="mobilenetv2", width_mult=0.25)),
    "pspnet-resnet50": ("pspnet", dict(backbone="resnet50", width_mult=0.0625)),
    "v3-resnet50-os8": ("deeplabv3", dict(backbone="resnet50", width_mult=0.0625, output_stride=8)),
}
CASES = {name: (name, kw) for name, kw in TINY.items()} | EXTRA


def test_every_model_is_registered_with_paper_and_summary():
    assert set(TINY) <= set(list_models())
    from medseg.models import MODELS

    for name in TINY:
        meta = MODELS.get(name).meta
        assert meta.get("paper") and meta.get("summary"), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_input_size_gives_input_size_probabilities(case):
    name, kw = CASES[case]
    torch.manual_seed(0)
    model = build_model(name, 3, 2, **kw).eval()
    x = torch.randn(1, 3, 45, 53)  # not a multiple of anything
    p = predict_proba(model, x)
    assert p.shape == (1, 2, 45, 53)
    assert torch.allclose(p.sum(1), torch.ones(1, 45, 53), atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_parameter_receives_a_gradient(case):
    name, kw = CASES[case]
    torch.manual_seed(0)
    model = build_model(name, 3, 3, **kw).train()
    size = 64 if name != "unet_valid" else 68
    x = torch.randn(2, 3, size, size)
    logits, aux = model.forward_aux(x)
    if name != "unet_valid":
        assert logits.shape == (2, 3, size, size)
    loss = logits.square().mean() + sum(v.square().mean() for v in aux.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{case}: {pname} has no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{case}: {pname} has an all-zero gradient"


def test_unknown_option_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="width_mul"):
        build_model("segnet", 3, 2, width_mul=0.5)


# ---- parameter counts of the published architectures (built on the meta device: no memory, fast)
PUBLISHED = [
    # name, options, classes, published count, source
    ("fcn8s", {}, 21, 134e6, "Long et al. 2015, Table 1: FCN-VGG16 134M"),
    ("unet", dict(norm="none"), 2, 31.03e6, "Ronneberger et al. 2015 Caffe model: 31.03M"),
    ("unet_valid", dict(norm="none"), 2, 31.03e6, "same layers as the padded U-Net"),
    ("segnet", {}, 12, 29.45e6, "Badrinarayanan et al. 2017, Table 6: 29.5M"),
    ("deeplabv1", {}, 21, 20.5e6, "Chen et al. 2015, Table 2: DeepLab-LargeFOV 20.5M"),
]


@pytest.mark.parametrize("name,options,classes,published,source", PUBLISHED)
def test_parameter_count_matches_publication(name, options, classes, published, source):
    with torch.device("meta"):
        model = build_model(name, 3, classes, **options)
    n = count_parameters(model)
    assert abs(n - published) / published < 0.01, f"{name}: {n} vs {published} ({source})"


def test_backbone_parameter_counts_match_torchvision():
    """torchvision's ImageNet models minus their classifier (fc / classifier)."""
    from medseg.models.backbones import VGG16, MobileNetV2, ResNet

    expected = {  # torchvision totals: resnet18 11,689,512 (fc 513,000), resnet50 25,557,032 (fc 2,049,000),
        # resnet101 44,549,160, vgg16 138,357,544 (classifier 123,642,856), mobilenet_v2 3,504,872 (1,281,000)
        "resnet18": 11_689_512 - 513_000,
        "resnet50": 25_557_032 - 2_049_000,
        "resnet101": 44_549_160 - 2_049_000,
        "vgg16": 138_357_544 - 123_642_856,
        "mobilenetv2": 3_504_872 - 1_281_000,
    }
    with torch.device("meta"):
        nets = {
            "resnet18": ResNet("resnet18"),
            "resnet50": ResNet("resnet50"),
            "resnet101": ResNet("resnet101"),
            "vgg16": VGG16(),
            "mobilenetv2": MobileNetV2(),
        }
    for name, net in nets.items():
        assert count_parameters(net) == expected[name], name


# ---- FCN
def test_fcn_bilinear_kernel_is_the_caffe_filter():
    k = bilinear_kernel(2, 4)
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])  # 1 - |i - 1.5| / 2
    assert torch.allclose(k[0, 0], row[:, None] * row[None, :])
    assert torch.allclose(k[1, 1], k[0, 0]) and k[0, 1].abs().sum() == 0 and k[1, 0].abs().sum() == 0


def test_fcn_upsampling_initialised_bilinear():
    model = build_model("fcn8s", 3, 3, **TINY["fcn8s"])
    for up in (model.upscore2, model.upscore_pool4):
        assert torch.allclose(up.weight, bilinear_kernel(3, 4))
    # behaviour: a 2x transposed conv (k=4, s=2, p=1) initialised bilinear equals bilinear
    # interpolation (half-pixel centres) away from the border
    x = torch.randn(1, 3, 7, 9)
    up = bilinear_upsampler(3, 2, padding=1)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(up(x)[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)
    fixed = FixedBilinearUpsample(3, 8, padding=4)
    ref8 = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    assert torch.allclose(fixed(x)[..., 8:-8, 8:-8], ref8[..., 8:-8, 8:-8], atol=1e-5)
    assert not any("upscore." in n for n, _ in model.named_parameters())  # the final one is fixed


def test_fcn_skip_scores_start_at_zero_so_fcn8s_starts_as_fcn32s_path():
    model = build_model("fcn8s", 3, 2, **TINY["fcn8s"])
    assert model.score_pool4.weight.abs().sum() == 0 and model.score_pool3.weight.abs().sum() == 0


@pytest.mark.parametrize("size", [(1, 1), (31, 47), (64, 64), (100, 77)])
def test_fcn_vgg_takes_any_size_thanks_to_padding_and_crops(size):
    model = build_model("fcn16s", 1, 2, **TINY["fcn16s"]).eval()
    assert model(torch.randn(1, 1, *size)).shape[-2:] == size


# ---- SegNet
def test_segnet_unpooling_places_values_at_recorded_indices():
    torch.manual_seed(0)
    model = build_model("segnet", 3, 2, **TINY["segnet"]).eval()
    records, pools = [], []
    model.unpool.register_forward_hook(lambda m, inp, out: records.append((inp[0], inp[1], out)))
    last_stage = model.encoder.stage(4)[-1]  # the ReLU ending the conv5 block
    last_stage.register_forward_hook(lambda m, inp, out: pools.append(out))
    model(torch.randn(1, 3, 70, 66))
    assert len(records) == 5
    # the first unpooling uses the argmax positions of the deepest encoder pooling
    _, expected_idx = F.max_pool2d(pools[0], 2, 2, return_indices=True)
    x, idx, out = records[0]
    assert torch.equal(idx, expected_idx)
    for x, idx, out in records:
        flat = out.flatten(2)
        assert torch.equal(flat.gather(2, idx.flatten(2)), x.flatten(2))  # values at the indices
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, idx.flatten(2), True)
        assert flat[~mask].abs().sum() == 0  # zeros everywhere else


def test_segnet_decoder_has_no_feature_skips():
    model = build_model("segnet", 3, 2, **TINY["segnet"])
    first_conv = model.decoder[0][0][0]
    assert first_conv.in_channels == model.encoder.out_channels  # not doubled by a concatenation


# ---- PSPNet / DeepLab
def test_pspnet_aux_head_and_pyramid():
    model = build_model("pspnet", 3, 4, **TINY["pspnet"]).train()
    logits, aux = model.forward_aux(torch.randn(1, 3, 48, 64))  # batch size 1 in training
    assert set(aux) == {"aux"} and aux["aux"].shape == logits.shape == (1, 4, 48, 64)
    c = model.backbone.channels["layer4"]
    assert model.ppm.bins == (1, 2, 3, 6)
    assert all(stage[0].out_channels == c // 4 for stage in model.ppm.stages)
    assert model.backbone.output_stride == 8


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus", "pspnet"])
def test_pooled_branch_trains_with_batch_size_one(name):
    model = build_model(name, 3, 2, **TINY[name]).train()
    model(torch.randn(1, 3, 32, 32)).mean().backward()  # BatchNorm over one 1x1 value would raise
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_deeplab_details():
    v3 = build_model("deeplabv3", 3, 2, **TINY["deeplabv3"])
    rates = [b[0].dilation[0] for b in v3.aspp.branches[1:4]]
    assert rates == [6, 12, 18] and v3.input_multiple == 16
    v3_8 = build_model("deeplabv3", 3, 2, output_stride=8, **TINY["deeplabv3"])
    assert [b[0].dilation[0] for b in v3_8.aspp.branches[1:4]] == [12, 24, 36]
    v2 = build_model("deeplabv2", 3, 2, **TINY["deeplabv2"])
    assert [c.dilation[0] for c in v2.aspp] == [6, 12, 18, 24]
    plus = build_model("deeplabv3plus", 3, 2, **TINY["deeplabv3plus"])
    assert plus.reduce[0].out_channels == 6  # 48 * width_mult
    sep = plus.aspp.branches[1][0][0]
    assert sep.groups == sep.in_channels  # depthwise-separable atrous branch
    v1 = build_model("deeplabv1", 3, 2)
    assert v1.fc6.dilation == (12, 12) and v1.fc6.out_channels == 1024
    pools = [v1.backbone.pool(i).stride for i in range(5)]
    assert pools == [2, 2, 2, 1, 1]


def test_resnet_output_strides():
    from medseg.models.backbones import build_backbone

    x = torch.randn(1, 3, 64, 64)
    for os_, size in ((32, 2), (16, 4), (8, 8)):
        for name in ("resnet18", "resnet50", "mobilenetv2"):
            net = build_backbone(name, output_stride=os_, width_mult=0.125).eval()
            feats = net.forward_features(x)
            assert feats["layer4"].shape[-1] == size, (name, os_)
            assert feats["layer1"].shape[-1] == 16
            assert all(feats[k].shape[1] == c for k, c in net.channels.items() if k in feats)


# ---- valid U-Net
def test_unet_valid_paper_sizes_and_target_crop():
    with torch.device("meta"):
        model = build_model("unet_valid", 1, 2)
    assert model.output_margin == 92 and model.output_size(572) == 388
    assert model.output_size(571) is None
    assert model.valid_input_size(388) == 572
    small = build_model("unet_valid", 1, 2, base_width=2, depth=2)
    target = torch.arange(64 * 64).reshape(1, 64, 64)
    cropped = small.crop_target(target)
    assert cropped.shape == (1, 24, 24) and cropped[0, 0, 0] == 20 * 64 + 20
    out = small(torch.randn(1, 1, 64, 64))
    assert out.shape[-2:] == cropped.shape[-2:]
    with pytest.raises(ValueError, match="valid"):
        small(torch.randn(1, 1, 63, 64))
