"""PSPNet (Zhao, Shi, Qi, Wang & Jia, CVPR 2017, arXiv:1612.01105).

A dilated ResNet (output stride 8) feeds the pyramid pooling module (Sec. 3.2,
Fig. 3): average pooling to 1x1, 2x2, 3x3 and 6x6 bins, each reduced by a 1x1
convolution to 1/N of the channels (N = 4 levels), bilinear upsampling back,
concatenation with the features, then a 3x3 convolution and the classifier. The
deep-supervision head on stage 4 (``layer3``) is returned by ``forward_aux`` as
``aux["aux"]`` (loss weight 0.4 in the paper, Sec. 3.3).

The 1x1 bin holds a single value per channel, so BatchNorm over it fails for batch
size 1 in training; that branch uses a biased convolution without normalisation.

Lighter variants (not the paper's): ``feature_layer="layer2"`` feeds the pyramid pooling
with the stride-8 output of ``layer2`` and builds no later stage (so no dilation and no
auxiliary head), and ``head_kernel=1`` makes the fusion convolution 1x1. With both and
``dropout=0.2`` this is the layout of segmentation_models_pytorch's ``PSPNet``
(``encoder_depth=3``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.backbones import ResNet, build_backbone
from medseg.models.base import SegmentationModel
from medseg.models.blocks import ConvNormAct
from medseg.models.registry import MODELS

_FEATURE_STRIDE = {"layer2": 8, "layer3": 16, "layer4": 32}  # undilated strides


class PyramidPooling(nn.Module):
    """Pyramid pooling module: ``[x, up(conv(pool_b(x))) for b in bins]`` concatenated."""

    def __init__(self, in_ch: int, bins: Sequence[int] = (1, 2, 3, 6), norm: str = "batch") -> None:
        super().__init__()
        self.bins = tuple(bins)
        red = in_ch // len(self.bins)
        self.stages = nn.ModuleList(
            ConvNormAct(in_ch, red, 1, norm="none" if b == 1 else norm) for b in self.bins
        )
        self.out_channels = in_ch + red * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for b, stage in zip(self.bins, self.stages):
            y = stage(F.adaptive_avg_pool2d(x, b))
            outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


class PSPNet(SegmentationModel):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        output_stride: int = 8,
        width_mult: float = 1.0,
        bins: Sequence[int] = (1, 2, 3, 6),
        head_width: int = 512,
        dropout: float = 0.1,
        norm: str = "batch",
        backbone_weights: str | None = None,
        feature_layer: str = "layer4",
        head_kernel: int = 3,
    ) -> None:
        super().__init__()
        if feature_layer not in _FEATURE_STRIDE:
            raise ValueError(
                f"feature_layer must be one of {', '.join(_FEATURE_STRIDE)}, got '{feature_layer}'"
            )
        if head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {head_kernel}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.feature_layer = feature_layer
        self.input_multiple = min(output_stride, _FEATURE_STRIDE[feature_layer])
        self.backbone = build_backbone(
            backbone,
            in_channels,
            output_stride=output_stride,
            width_mult=width_mult,
            weights=backbone_weights,
        )
        ch = self.backbone.channels
        if feature_layer != "layer4":
            if not isinstance(self.backbone, ResNet):
                raise ValueError(f"feature_layer '{feature_layer}' needs a ResNet backbone, got '{backbone}'")
            # later stages are never run: drop them (and their parameters)
            for name in ("layer3", "layer4")[("layer2", "layer3").index(feature_layer) :]:
                setattr(self.backbone, name, nn.Identity())
        self.ppm = PyramidPooling(ch[feature_layer], bins, norm)
        hw = max(8, int(head_width * width_mult))
        self.head = nn.Sequential(
            ConvNormAct(self.ppm.out_channels, hw, head_kernel, norm=norm),
            nn.Dropout2d(dropout),
            nn.Conv2d(hw, num_classes, 1),
        )
        self.aux_head: nn.Module | None = None
        if feature_layer == "layer4":  # deep supervision on stage 4 (layer3)
            aw = max(8, ch["layer3"] // 4)
            self.aux_head = nn.Sequential(
                ConvNormAct(ch["layer3"], aw, 3, norm=norm),
                nn.Dropout2d(dropout),
                nn.Conv2d(aw, num_classes, 1),
            )

    def _run(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, dict]:
        self.check_input(x)
        size = x.shape[-2:]
        feats = self.backbone.forward_features(x)
        logits = F.interpolate(
            self.head(self.ppm(feats[self.feature_layer])), size=size, mode="bilinear", align_corners=False
        )
        if not with_aux or self.aux_head is None:
            return logits, {}
        aux = F.interpolate(self.aux_head(feats["layer3"]), size=size, mode="bilinear", align_corners=False)
        return logits, {"aux": aux}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)[0]

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self._run(x, True)


MODELS.add(
    "pspnet",
    PSPNet,
    paper="Zhao et al., CVPR 2017 (arXiv:1612.01105)",
    summary="PSPNet: dilated ResNet + pyramid pooling (bins 1/2/3/6), aux head on stage 4",
)
