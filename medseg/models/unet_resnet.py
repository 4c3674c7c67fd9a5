"""U-Net with a ResNet encoder: the widespread "U-Net, ResNet-34 encoder" design.

The U-Net idea (Ronneberger et al., MICCAI 2015, arXiv:1505.04597): a contracting path,
an expanding path, and skip connections concatenating encoder features at each scale.
Here the contracting path is a ResNet (He et al., CVPR 2016, arXiv:1512.03385) whose
stem (stride 2) and ``layer1..layer3`` (strides 4, 8, 16) provide the skips and whose
``layer4`` (stride 32) is the bottleneck. Each of the five decoder blocks upsamples x2
(nearest), concatenates the skip of that scale (the last block, at full resolution,
has none) and applies two 3x3 conv-norm-ReLU; a 3x3 convolution gives the class
scores at the input size. With ResNet-34 and decoder widths (256, 128, 64, 32, 16) this
is the layout of segmentation_models_pytorch's ``Unet`` (24.44 M parameters, 2 classes).

``deep_supervision=True`` adds a 1x1 head on each of the first four decoder blocks (strides 16,
8, 4, 2): ``forward_aux`` then returns their logits under ``"deep_supervision"``, highest
resolution first, for the ``deep_supervision`` loss (nnU-Net's weighting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.backbones import RESNET_LAYERS, build_backbone, scaled
from medseg.models.registry import MODELS
from medseg.models.unet import DecoderStagesUNet, DoubleConv

_SKIPS = ("layer3", "layer2", "layer1", "stem", None)  # skip of each decoder block, coarse to fine


class DecoderBlock(nn.Module):
    """Upsample x2 (nearest) -> concatenate the skip (if any) -> two 3x3 conv-norm-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        self.convs = DoubleConv(in_ch + skip_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetResNet(DecoderStagesUNet):
    """ResNet-18/34/50/101 encoder + five-block U-Net decoder (see the module docstring)."""

    input_multiple = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: str = "resnet34",
        decoder_widths: Sequence[int] = (256, 128, 64, 32, 16),
        norm: str = "batch",
        width_mult: float = 1.0,
        backbone_weights: str | None = None,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in RESNET_LAYERS:
            raise ValueError(
                f"unet_resnet needs a ResNet backbone ({', '.join(RESNET_LAYERS)}); got '{backbone}'"
            )
        if len(decoder_widths) != len(_SKIPS):
            raise ValueError(
                f"decoder_widths needs {len(_SKIPS)} widths (strides 16, 8, 4, 2, 1), "
                f"got {len(decoder_widths)}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes
        self.backbone = build_backbone(backbone, in_channels, width_mult=width_mult, weights=backbone_weights)
        ch = self.backbone.channels
        widths = [scaled(int(w), width_mult) for w in decoder_widths]
        self.blocks = nn.ModuleList()
        prev = ch["layer4"]
        for skip, w in zip(_SKIPS, widths):
            self.blocks.append(DecoderBlock(prev, ch[skip] if skip else 0, w, norm))
            prev = w
        self.head = nn.Conv2d(prev, num_classes, 3, padding=1)
        self.deep_heads = (
            nn.ModuleList(nn.Conv2d(w, num_classes, 1) for w in widths[:-1]) if deep_supervision else None
        )

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every decoder block, coarsest (stride 16) first, the last at full size."""
        self.check_input(x)
        feats = self.backbone.forward_features(x)
        h = feats["layer4"]
        outputs = []
        for skip, block in zip(_SKIPS, self.blocks):
            h = block(h, feats[skip] if skip else None)
            outputs.append(h)
        return outputs


MODELS.add(
    "unet_resnet",
    UNetResNet,
    paper="Ronneberger et al., MICCAI 2015 (arXiv:1505.04597) with a ResNet encoder "
    "(He et al., CVPR 2016, arXiv:1512.03385)",
    summary="U-Net with a ResNet encoder (default ResNet-34), nearest-upsampling decoder",
)
