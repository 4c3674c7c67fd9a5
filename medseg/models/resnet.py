"""ResNet encoders for the segmentation models: ResNet-18/34/50/101 (He et al., CVPR 2016,
arXiv:1512.03385) without the classifier, with torchvision's parameter names.

The output stride is reduced from 32 to 16 or 8 by replacing the stride of the last stages
with dilation, as in DeepLab (Chen et al. 2017, arXiv:1606.00915, Sec. 3.1) and PSPNet; the
optional multi-grid follows DeepLab v3 (Chen et al. 2017, arXiv:1706.05587, Sec. 3.2).
:mod:`medseg.models.backbones` re-exports every name here and builds these encoders by name.
It also holds :func:`scaled`, the channel-width rule shared by all the backbones (this is the
lowest backbone module, so the others import it from here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.models.encoder import FeatureEncoder


def scaled(width: int, width_mult: float, divisor: int = 1) -> int:
    """``width * width_mult`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(width * width_mult / divisor)) * divisor)


# --------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: one activation-sized allocation less per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, stride on the 3x3 (torchvision "v1.5")."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision
        return self.relu(out)


RESNET_LAYERS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(FeatureEncoder):
    """ResNet encoder (no classifier) with output stride 32, 16 or 8 through dilation.

    ``multi_grid`` (DeepLab v3, Sec. 3.2): per-block multipliers of the last stage's
    dilation, e.g. ``(1, 2, 4)`` (repeated cyclically if the stage has more blocks,
    truncated if fewer).
    """

    def __init__(
        self,
        depth: str = "resnet50",
        in_channels: int = 3,
        *,
        output_stride: int = 32,
        width_mult: float = 1.0,
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"unknown ResNet '{depth}'; choose one of {', '.join(RESNET_LAYERS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, counts = RESNET_LAYERS[depth]
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
        w = scaled(64, width_mult)
        self.inplanes, self.dilation = w, 1
        self.conv1 = nn.Conv2d(in_channels, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, w, counts[0])
        self.layer2 = self._make_layer(block, 2 * w, counts[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, 4 * w, counts[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, 8 * w, counts[3], 2, dilate[2], multi_grid)
        e = block.expansion  # type: ignore[attr-defined]
        self.channels = {
            "stem": w,
            "layer1": w * e,
            "layer2": 2 * w * e,
            "layer3": 4 * w * e,
            "layer4": 8 * w * e,
        }
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self,
        block: type[nn.Module],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
        multi_grid: Sequence[int] | None = None,
    ) -> nn.Sequential:
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        e = block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != planes * e:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * e, 1, stride, bias=False), nn.BatchNorm2d(planes * e)
            )
        if multi_grid is not None:
            if not multi_grid:
                raise ValueError("multi_grid must not be empty")
            # applied cyclically when the stage has another number of blocks (ResNet-18/34: 2 or 3)
            dilations = [self.dilation * multi_grid[i % len(multi_grid)] for i in range(blocks)]
        else:  # torchvision's rule: the first block keeps the previous dilation
            dilations = [previous] + [self.dilation] * (blocks - 1)
        layers = [block(self.inplanes, planes, stride, downsample, dilations[0])]
        self.inplanes = planes * e
        layers += [block(self.inplanes, planes, dilation=d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return {"stem": stem, "layer1": l1, "layer2": l2, "layer3": l3, "layer4": l4}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["layer4"]
