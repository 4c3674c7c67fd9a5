"""BEFUnet decoder: the two DLF levels back to the input resolution.

The paper does not detail its decoder; this one follows the official code's layout:
the shallow level (H/4, C) through one conv3x3-GN-ReLU, the deep level (H/32, 8C)
through three conv3x3-GN-ReLU + 2x bilinear upsampling steps, both to ``channels`` at
H/4; their sum -> 1x1 conv -> ReLU -> upsampling to the input size -> 3x3 conv to the
class logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ConvUpsample(nn.Sequential):
    """``steps`` x (conv3x3 -> GroupNorm -> ReLU [-> 2x bilinear upsampling])."""

    def __init__(self, in_channels: int, channels: int, steps: int, upsample: bool) -> None:
        layers: list[nn.Module] = []
        for s in range(steps):
            layers += [
                nn.Conv2d(in_channels if s == 0 else channels, channels, 3, padding=1, bias=False),
                group_norm(channels),
                nn.ReLU(inplace=True),
            ]
            if upsample:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        super().__init__(*layers)


class BEFUnetDecoder(nn.Module):
    def __init__(
        self,
        shallow_channels: int,
        deep_channels: int,
        num_classes: int,
        *,
        channels: int = 128,
        head_channels: int = 16,
        deep_steps: int = 3,
    ) -> None:
        super().__init__()
        self.shallow = ConvUpsample(shallow_channels, channels, 1, upsample=False)
        self.deep = ConvUpsample(deep_channels, channels, deep_steps, upsample=True)
        self.pred = nn.Sequential(nn.Conv2d(channels, head_channels, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(head_channels, num_classes, 3, padding=1)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """shallow [B, C, H/4, W/4], deep [B, 8C, H/32, W/32] (channels-first) -> logits [B, K, *size]."""
        x = self.shallow(shallow) + self.deep(deep)
        x = F.interpolate(self.pred(x), size=size, mode="bilinear", align_corners=False)
        return self.head(x)
