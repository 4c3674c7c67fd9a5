"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell, CVPR 2015, arXiv:1411.4038).

VGG-16 variant, as in the reference Caffe nets: conv1_1 is padded by 100 so that any
input size works, fc6/fc7 become 7x7 and 1x1 convolutions, 1x1 score layers predict
classes at strides 32 (fc7), 16 (pool4) and 8 (pool3), transposed convolutions
initialised to bilinear interpolation upsample the coarse scores (Sec. 3.3), and skip
scores are fused by element-wise addition after an alignment crop (Sec. 4.2). The
crop offsets (5, 9, 19, 27, 31) follow from the padding and the pooling geometry.
The final upsampling is fixed to bilinear; intermediate ones are learned (Sec. 4.2).

ResNet variant: the same score/upsample/fuse scheme on ``layer4`` (stride 32),
``layer3`` (16) and ``layer2`` (8) of a padded ResNet; H, W must be multiples of 32.
Options beyond the paper: ``head_conv`` puts a 3x3 conv-BN-ReLU-dropout of that width
before the score layer, and FCN-32s takes ``output_stride`` 16 or 8 (a dilated ResNet,
final bilinear upsampling by that factor). ``fcn32s`` with ``backbone="resnet50"``,
``output_stride=8``, ``head_conv=512``, ``dropout=0.1`` is the layout of torchvision's
``fcn_resnet50``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.backbones import (
    RESNET_LAYERS,
    VGG16,
    build_backbone,
    load_backbone_weights,
    read_state_dict,
    scaled,
)
from medseg.models.base import SegmentationModel
from medseg.models.blocks import ConvNormAct
from medseg.models.registry import MODELS

PAPER = "Long, Shelhamer & Darrell, CVPR 2015 (arXiv:1411.4038)"


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights ``[C, C, k, k]`` that make a transposed convolution a per-channel bilinear
    interpolation (the FCN reference ``upsample_filt``)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = (filt1d[:, None] * filt1d[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def bilinear_upsampler(channels: int, factor: int, padding: int = 0) -> nn.ConvTranspose2d:
    """A learnable ``ConvTranspose2d`` (kernel 2f, stride f, no bias) initialised bilinear."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=padding, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class FixedBilinearUpsample(nn.Module):
    """A transposed convolution frozen to bilinear interpolation (a buffer, not a parameter)."""

    def __init__(self, channels: int, factor: int, padding: int = 0) -> None:
        super().__init__()
        self.factor, self.padding = factor, padding
        kernel = bilinear_kernel(1, 2 * factor).expand(channels, 1, -1, -1).contiguous()
        self.weight: torch.Tensor
        self.register_buffer("weight", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight.to(x.dtype), stride=self.factor, padding=self.padding, groups=x.shape[1]
        )


def crop_like(x: torch.Tensor, offset: int, ref: torch.Tensor) -> torch.Tensor:
    """Caffe ``Crop``: ``x[..., o:o+h, o:o+w]`` with the spatial size of ``ref``."""
    h, w = ref.shape[-2:]
    return x[..., offset : offset + h, offset : offset + w]


class FCNVGG(SegmentationModel):
    """FCN on VGG-16 (the paper's nets); ``variant`` is 32, 16 or 8 (the output stride
    of the finest fused score)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        variant: int = 8,
        width_mult: float = 1.0,
        fc_width: int = 4096,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if variant not in (32, 16, 8):
            raise ValueError(f"FCN variant must be 32, 16 or 8, got {variant}")
        self.in_channels, self.num_classes, self.variant = in_channels, num_classes, variant
        self.input_multiple = 1  # conv1_1 padding 100 + crops: any size works
        self.backbone = VGG16(
            in_channels, batch_norm=batch_norm, width_mult=width_mult, ceil_mode=True, first_padding=100
        )
        c = self.backbone.stage_channels
        fc = scaled(fc_width, width_mult)
        k = num_classes
        self.fc6 = nn.Conv2d(c[4], fc, 7)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(fc, k, 1)
        if variant == 32:
            self.upscore = FixedBilinearUpsample(k, 32)
        else:
            self.score_pool4 = nn.Conv2d(c[3], k, 1)
            self.upscore2 = bilinear_upsampler(k, 2)
            if variant == 16:
                self.upscore = FixedBilinearUpsample(k, 16)
            else:
                self.score_pool3 = nn.Conv2d(c[2], k, 1)
                self.upscore_pool4 = bilinear_upsampler(k, 2)
                self.upscore = FixedBilinearUpsample(k, 8)
        # the paper zero-initialises the score layers of the skips (Sec. 4.2)
        for name in ("score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        _, _, pool3, pool4, pool5 = self.backbone.forward_pools(x)
        h = self.drop(F.relu(self.fc6(pool5), inplace=True))
        h = self.drop(F.relu(self.fc7(h), inplace=True))
        score = self.score_fr(h)
        if self.variant == 32:
            return crop_like(self.upscore(score), 19, x)
        up2 = self.upscore2(score)
        score = up2 + crop_like(self.score_pool4(pool4), 5, up2)
        if self.variant == 16:
            return crop_like(self.upscore(score), 27, x)
        up4 = self.upscore_pool4(score)
        score = up4 + crop_like(self.score_pool3(pool3), 9, up4)
        return crop_like(self.upscore(score), 31, x)

    def load_backbone(self, path: str) -> list[str]:
        """torchvision ``vgg16``/``vgg16_bn`` file: ``features.*`` into the backbone and
        ``classifier.0``/``classifier.3`` reshaped into fc6/fc7 (the paper's "convolutionalisation")."""
        missing = load_backbone_weights(self.backbone, path)
        state = read_state_dict(path)
        for src, conv in (("classifier.0", self.fc6), ("classifier.3", self.fc7)):
            if f"{src}.weight" in state and state[f"{src}.weight"].numel() == conv.weight.numel():
                with torch.no_grad():
                    conv.weight.copy_(state[f"{src}.weight"].reshape(conv.weight.shape))
                    if conv.bias is not None:
                        conv.bias.copy_(state[f"{src}.bias"])
        return missing


class FCNResNet(SegmentationModel):
    """The FCN skip architecture on a (padded, undilated) ResNet: scores at strides
    32/16/8, learned 2x bilinear-initialised upsampling, fixed bilinear final upsampling.
    FCN-32s may use a dilated ResNet (``output_stride`` 16 or 8)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        variant: int = 8,
        backbone: str = "resnet50",
        width_mult: float = 1.0,
        backbone_weights: str | None = None,
        output_stride: int = 32,
        head_conv: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if variant not in (32, 16, 8):
            raise ValueError(f"FCN variant must be 32, 16 or 8, got {variant}")
        if output_stride != 32 and variant != 32:
            raise ValueError(
                f"output_stride {output_stride} needs FCN-32s: the skips of FCN-{variant}s "
                "expect an undilated ResNet (output_stride 32)"
            )
        if head_conv < 0:
            raise ValueError(f"head_conv must be >= 0, got {head_conv}")
        self.in_channels, self.num_classes, self.variant = in_channels, num_classes, variant
        self.input_multiple = output_stride
        self.backbone = build_backbone(
            backbone,
            in_channels,
            output_stride=output_stride,
            width_mult=width_mult,
            weights=backbone_weights,
        )
        ch, k = self.backbone.channels, num_classes
        top = ch["layer4"]
        self.head: nn.Module = nn.Identity()
        if head_conv:
            self.head = nn.Sequential(ConvNormAct(top, head_conv, 3), nn.Dropout2d(dropout))
            top = head_conv
        self.score = nn.Conv2d(top, k, 1)
        self.skips = nn.ModuleList()
        self.ups = nn.ModuleList()
        for name in ("layer3", "layer2")[: {32: 0, 16: 1, 8: 2}[variant]]:
            skip = nn.Conv2d(ch[name], k, 1)
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)  # type: ignore[arg-type]  # Conv2d(bias=True) has one
            self.skips.append(skip)
            self.ups.append(bilinear_upsampler(k, 2, padding=1))
        factor = min(variant, output_stride)
        self.upscore = FixedBilinearUpsample(k, factor, padding=factor // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.backbone.forward_features(x)
        score = self.score(self.head(feats["layer4"]))
        for name, skip, up in zip(("layer3", "layer2"), self.skips, self.ups):
            score = up(score) + skip(feats[name])
        return self.upscore(score)


def build_fcn(
    in_channels: int,
    num_classes: int,
    *,
    variant: int,
    backbone: str = "vgg16",
    width_mult: float = 1.0,
    fc_width: int = 4096,
    dropout: float = 0.5,
    backbone_weights: str | None = None,
    output_stride: int = 32,
    head_conv: int = 0,
) -> SegmentationModel:
    """FCN-``variant``s (32, 16 or 8) on VGG-16 (``vgg16``, ``vgg16_bn``) or a ResNet.
    ``output_stride`` and ``head_conv`` apply to ResNet backbones only."""
    if backbone in ("vgg16", "vgg16_bn"):
        if output_stride != 32 or head_conv:
            raise ValueError(
                "output_stride and head_conv apply to ResNet backbones only "
                "(the VGG-16 FCN has fc6/fc7 as its head)"
            )
        vgg = FCNVGG(
            in_channels,
            num_classes,
            variant=variant,
            width_mult=width_mult,
            fc_width=fc_width,
            batch_norm=backbone == "vgg16_bn",
            dropout=dropout,
        )
        if backbone_weights is not None:
            vgg.load_backbone(backbone_weights)
        return vgg
    if backbone in RESNET_LAYERS:
        return FCNResNet(
            in_channels,
            num_classes,
            variant=variant,
            backbone=backbone,
            width_mult=width_mult,
            backbone_weights=backbone_weights,
            output_stride=output_stride,
            head_conv=head_conv,
            dropout=dropout,
        )
    raise ValueError(
        f"FCN backbone must be vgg16, vgg16_bn or one of {', '.join(RESNET_LAYERS)}; got '{backbone}'"
    )


# The three nets of the paper differ only in the finest fused score. A dilated ResNet
# (output_stride 16 or 8) replaces the skips, so only FCN-32s offers it.
FCN_VARIANTS: dict[str, tuple[dict[str, int], str]] = {
    "fcn32s": ({"variant": 32}, "FCN-32s: VGG-16 (or ResNet), single-stream x32 upsampling"),
    "fcn16s": ({"variant": 16, "output_stride": 32}, "FCN-16s: FCN-32s + pool4 skip fused by addition"),
    "fcn8s": ({"variant": 8, "output_stride": 32}, "FCN-8s: FCN-16s + pool3 skip fused by addition"),
}
for _name, (_fixed, _summary) in FCN_VARIANTS.items():
    MODELS.add(_name, build_fcn, fixed=_fixed, paper=PAPER, summary=_summary)
