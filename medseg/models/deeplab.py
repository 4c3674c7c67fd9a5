"""DeepLab v1, v2, v3 and v3+ (Chen, Papandreou, Kokkinos, Murphy, Yuille, Schroff, Adam, Zhu).

- v1 (ICLR 2015, arXiv:1412.7062), "DeepLab-LargeFOV": VGG-16 with pool4/pool5 at
  stride 1 (3x3 pooling, padding 1), conv5 dilated by 2, fc6 a 3x3 convolution with
  1024 channels dilated by 12, fc7 1x1; output stride 8, bilinear x8 upsampling
  (Sec. 3.1). The paper post-processes with a dense CRF: ``medseg.inference.crf``.
- v2 (TPAMI 2017, arXiv:1606.00915): ASPP-L, four parallel 3x3 atrous convolutions
  (rates 6/12/18/24) straight to class scores, *summed* (Sec. 3.3, Fig. 7), on a
  dilated ResNet with output stride 8.
- v3 (arXiv:1706.05587): ASPP with a 1x1 branch, three 3x3 atrous branches (rates
  6/12/18 at output stride 16, doubled at 8) and image-level pooling, each 256
  channels with BN, concatenated and projected by 1x1 (Sec. 3.3); multi-grid
  (1, 2, 4) in the last ResNet stage (Sec. 3.2).
- v3+ (ECCV 2018, arXiv:1802.02611): the v3 encoder at output stride 16 with
  depthwise-separable atrous branches, and a decoder that upsamples x4, concatenates
  the stride-4 low-level features reduced to 48 channels, refines with two 3x3
  separable convolutions and upsamples x4 (Sec. 3.1, Fig. 2).

The image-pooling branch sees a 1x1 map, so it has no BatchNorm (BatchNorm over one
value per channel fails at batch size 1 in training); it uses a biased convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.backbones import VGG16, build_backbone, load_backbone_weights, scaled
from medseg.models.base import SegmentationModel
from medseg.models.blocks import ConvNormAct, SeparableConv
from medseg.models.registry import MODELS


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    """Global average pooling -> 1x1 conv (bias, no norm) -> ReLU -> broadcast to the map size."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return y.expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLab v3 (and v3+ with ``separable=True``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        *,
        separable: bool = False,
        norm: str = "batch",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(in_ch, out_ch, 1, norm=norm)]
        for r in rates:
            if separable:
                branches.append(SeparableConv(in_ch, out_ch, 3, dilation=r, norm=norm))
            else:
                branches.append(ConvNormAct(in_ch, out_ch, 3, dilation=r, norm=norm))
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvNormAct(out_ch * len(branches), out_ch, 1, norm=norm), nn.Dropout2d(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV1(SegmentationModel):
    """DeepLab-LargeFOV on atrous VGG-16 (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width_mult: float = 1.0,
        fc_width: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = 8
        pools = ((3, 2, 1),) * 3 + ((3, 1, 1),) * 2
        self.backbone = VGG16(in_channels, width_mult=width_mult, pools=pools, conv5_dilation=2)
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        fc = scaled(fc_width, width_mult)
        c5 = self.backbone.out_channels
        self.fc6 = nn.Conv2d(c5, fc, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc8 = nn.Conv2d(fc, num_classes, 1)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.backbone(x)
        h = self.drop(F.relu(self.fc6(h), inplace=True))
        h = self.drop(F.relu(self.fc7(h), inplace=True))
        return _up(self.fc8(h), x.shape[-2:])


class DeepLabV2(SegmentationModel):
    """ASPP-L (rates 6/12/18/24, branch scores summed) on a dilated ResNet."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        output_stride: int = 8,
        width_mult: float = 1.0,
        rates: Sequence[int] = (6, 12, 18, 24),
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = output_stride
        self.backbone = build_backbone(
            backbone,
            in_channels,
            output_stride=output_stride,
            width_mult=width_mult,
            weights=backbone_weights,
        )
        c = self.backbone.channels["layer4"]
        self.aspp = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.aspp:  # the reference initialises the classifiers with N(0, 0.01)
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.backbone.forward_features(x)["layer4"]
        return _up(sum(conv(h) for conv in self.aspp), x.shape[-2:])


def _scaled_rates(rates: Sequence[int] | None, output_stride: int) -> tuple[int, ...]:
    if rates is not None:
        return tuple(rates)
    return (6, 12, 18) if output_stride >= 16 else (12, 24, 36)


class DeepLabV3(SegmentationModel):
    """ASPP (1x1, three atrous 3x3, image pooling) on a dilated backbone."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        output_stride: int = 16,
        width_mult: float = 1.0,
        rates: Sequence[int] | None = None,
        multi_grid: Sequence[int] | None = (1, 2, 4),
        aspp_width: int = 256,
        dropout: float = 0.1,
        norm: str = "batch",
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = output_stride
        if backbone == "mobilenetv2":
            multi_grid = None
        self.backbone = build_backbone(
            backbone,
            in_channels,
            output_stride=output_stride,
            width_mult=width_mult,
            multi_grid=multi_grid,
            weights=backbone_weights,
        )
        w = scaled(aspp_width, width_mult)
        self.aspp = ASPP(
            self.backbone.channels["layer4"],
            w,
            _scaled_rates(rates, output_stride),
            norm=norm,
            dropout=dropout,
        )
        self.classifier = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.backbone.forward_features(x)["layer4"]
        return _up(self.classifier(self.aspp(h)), x.shape[-2:])


class DeepLabV3Plus(SegmentationModel):
    """v3 encoder (separable ASPP) + decoder fusing stride-4 features reduced to 48 channels."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        output_stride: int = 16,
        width_mult: float = 1.0,
        rates: Sequence[int] | None = None,
        aspp_width: int = 256,
        low_level_width: int = 48,
        decoder_width: int = 256,
        dropout: float = 0.1,
        norm: str = "batch",
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = output_stride
        self.backbone = build_backbone(
            backbone,
            in_channels,
            output_stride=output_stride,
            width_mult=width_mult,
            weights=backbone_weights,
        )
        ch = self.backbone.channels
        w = scaled(aspp_width, width_mult)
        self.aspp = ASPP(
            ch["layer4"], w, _scaled_rates(rates, output_stride), separable=True, norm=norm, dropout=dropout
        )
        lw, dw = scaled(low_level_width, width_mult), scaled(decoder_width, width_mult)
        self.reduce = ConvNormAct(ch["layer1"], lw, 1, norm=norm)
        self.decoder = nn.Sequential(
            SeparableConv(w + lw, dw, 3, norm=norm), SeparableConv(dw, dw, 3, norm=norm)
        )
        self.classifier = nn.Conv2d(dw, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.backbone.forward_features(x)
        low = self.reduce(feats["layer1"])
        high = _up(self.aspp(feats["layer4"]), low.shape[-2:])
        h = self.decoder(torch.cat([high, low], dim=1))
        return _up(self.classifier(h), x.shape[-2:])


_V1 = "Chen et al., ICLR 2015 (arXiv:1412.7062)"
_V2 = "Chen et al., TPAMI 2017 (arXiv:1606.00915)"
_V3 = "Chen et al., 2017 (arXiv:1706.05587)"
_V3P = "Chen et al., ECCV 2018 (arXiv:1802.02611)"


MODELS.add(
    "deeplabv1", DeepLabV1, paper=_V1, summary="DeepLab v1 LargeFOV: atrous VGG-16, x8 bilinear, CRF optional"
)
MODELS.add(
    "deeplabv2", DeepLabV2, paper=_V2, summary="DeepLab v2: dilated ResNet (OS 8) + ASPP-L 6/12/18/24 summed"
)
MODELS.add(
    "deeplabv3", DeepLabV3, paper=_V3, summary="DeepLab v3: dilated ResNet (OS 16) + ASPP with image pooling"
)
MODELS.add(
    "deeplabv3plus",
    DeepLabV3Plus,
    paper=_V3P,
    summary="DeepLab v3+: separable ASPP encoder (OS 16) + decoder with stride-4 features",
)
