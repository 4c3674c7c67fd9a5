"""The contract every feature encoder (backbone) of the zoo keeps.

An encoder returns named feature maps from :meth:`FeatureEncoder.forward_features`
(``layer1`` at stride 4 ... ``layer4`` at stride 32 or less when dilated; ResNets add
``stem``) and names their widths in ``channels``. Decoders (DeepLab, PSPNet, the ResNet
U-Net) read only these two, so any encoder that keeps them plugs in.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureEncoder(nn.Module):
    """Base class of the zoo's encoders: ``channels`` and ``forward_features``."""

    channels: dict[str, int]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError
