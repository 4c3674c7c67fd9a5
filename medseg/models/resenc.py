"""Residual encoder stages of nnU-Net's ResEnc U-Net (Isensee et al., "nnU-Net Revisited",
MICCAI 2024, arXiv:2404.09556), in 2 or 3 dimensions (``dims``).

A basic residual block (He et al., CVPR 2016) in the "D" form of He et al., "Bag of Tricks"
(CVPR 2019): conv-norm-act, conv-norm, added to a shortcut that average-pools when the block
strides and projects with a 1x1 conv-norm when the width changes, then the activation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medseg.models.blocks import IntOrSeq, conv_layer, make_norm, per_axis
from medseg.models.unet import activation, conv_norm_act


class Stem(nn.Sequential):
    """The convolution in front of the first residual stage (its output is not a skip)."""


class BasicResidualBlock(nn.Module):
    """Two convolutions with a shortcut; the first convolution carries ``stride``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel_size: IntOrSeq = 3,
        stride: IntOrSeq = 1,
        norm: str = "instance",
        act: str = "leaky_relu",
        dims: int = 3,
    ) -> None:
        super().__init__()
        stride = per_axis(stride, dims, "stride")
        self.conv1 = conv_norm_act(
            in_ch, out_ch, stride=stride, padding=None, norm=norm, act=act, kernel_size=kernel_size, dims=dims
        )
        self.conv2 = conv_norm_act(
            out_ch, out_ch, padding=None, norm=norm, act="none", kernel_size=kernel_size, dims=dims
        )
        shortcut: list[nn.Module] = []
        if max(stride) > 1:
            pool: Any = nn.AvgPool2d if dims == 2 else nn.AvgPool3d
            shortcut.append(pool(stride, stride))
        if in_ch != out_ch:
            shortcut += [conv_layer(dims)(in_ch, out_ch, 1, bias=False), make_norm(norm, out_ch, dims)]
        self.shortcut = nn.Sequential(*shortcut)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualStage(nn.Sequential):
    """``n_blocks`` basic residual blocks; the first changes width and strides."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        n_blocks: int,
        *,
        kernel_size: IntOrSeq = 3,
        stride: IntOrSeq = 1,
        norm: str = "instance",
        act: str = "leaky_relu",
        dims: int = 3,
    ) -> None:
        if n_blocks < 1:
            raise ValueError(f"a residual stage needs n_blocks >= 1, got {n_blocks}")
        super().__init__(
            *(
                BasicResidualBlock(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    kernel_size=kernel_size,
                    stride=stride if i == 0 else 1,
                    norm=norm,
                    act=act,
                    dims=dims,
                )
                for i in range(n_blocks)
            )
        )
