"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597).

The padded variant: 3x3 convolutions keep the size, so the output matches the input
for any H, W divisible by 2**depth. The paper's configuration is depth 4, base
width 64, no normalisation (about 31.0 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.base import SegmentationModel
from medseg.models.blocks import ConvNormAct
from medseg.models.registry import MODELS


class DoubleConv(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm: str, padding: int = 1) -> None:
        super().__init__(
            ConvNormAct(in_ch, out_ch, 3, padding=padding, norm=norm),
            ConvNormAct(out_ch, out_ch, 3, padding=padding, norm=norm),
        )


def _build_layers(
    model: nn.Module,
    in_channels: int,
    num_classes: int,
    depth: int,
    base_width: int,
    norm: str,
    upsample: str,
    dropout: float,
    padding: int,
) -> None:
    """Encoder, decoder and head shared by the padded (``padding=1``) and valid (``padding=0``) U-Nets."""
    if depth < 1:
        raise ValueError("U-Net depth must be >= 1")
    if upsample not in ("transpose", "bilinear"):
        raise ValueError("upsample must be 'transpose' or 'bilinear'")
    widths = [base_width * 2**i for i in range(depth + 1)]
    model.encoders = nn.ModuleList([DoubleConv(in_channels, widths[0], norm, padding)])
    model.encoders.extend(DoubleConv(widths[i], widths[i + 1], norm, padding) for i in range(depth))
    model.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
    model.ups = nn.ModuleList()
    model.decoders = nn.ModuleList()
    for i in reversed(range(depth)):
        if upsample == "transpose":
            model.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
        else:
            model.ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(widths[i + 1], widths[i], 1),
                )
            )
        model.decoders.append(DoubleConv(2 * widths[i], widths[i], norm, padding))
    model.head = nn.Conv2d(widths[0], num_classes, 1)


class UNet(SegmentationModel):
    """Encoder of ``depth`` max-pool stages, widths ``base_width * 2**i``; decoder of
    2x2 up-convolutions (or bilinear upsampling) and skip concatenation."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        depth: int = 4,
        base_width: int = 64,
        norm: str = "batch",
        upsample: str = "transpose",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = 2**depth
        _build_layers(self, in_channels, num_classes, depth, base_width, norm, upsample, dropout, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


@MODELS.register(
    "unet",
    paper="Ronneberger et al., MICCAI 2015 (arXiv:1505.04597)",
    summary="U-Net with padded convolutions",
)
def build_unet(
    in_channels: int,
    num_classes: int,
    depth: int = 4,
    base_width: int = 64,
    norm: str = "batch",
    upsample: str = "transpose",
    dropout: float = 0.0,
) -> UNet:
    return UNet(
        in_channels,
        num_classes,
        depth=depth,
        base_width=base_width,
        norm=norm,
        upsample=upsample,
        dropout=dropout,
    )


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` window of ``x [..., H, W]`` (U-Net's skip cropping, Fig. 1)."""
    h, w = x.shape[-2:]
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"cannot centre-crop {(h, w)} to the larger {size}")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top : top + th, left : left + tw]


class UNetValid(SegmentationModel):
    """The paper's U-Net with *unpadded* 3x3 convolutions (Ronneberger et al. 2015, Sec. 2).

    Every convolution trims one pixel per side, so the output is smaller than the
    input by ``output_margin`` pixels per side (92 at depth 4: 572 -> 388, Fig. 1);
    encoder features are centre-cropped before the skip concatenation. Only some
    sizes are valid (each max-pool must see an even size): see :meth:`output_size`,
    :meth:`valid_input_size`. ``medseg.inference.predict_proba`` segments images of
    any size by overlap-tiling with mirrored context (Fig. 2). For training, crop the
    target (and any weight map) to the output with :meth:`crop_target`; the boundary
    weight map of Eq. 2 is the ``weight_map`` of the U-Net weighted cross-entropy loss.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        depth: int = 4,
        base_width: int = 64,
        norm: str = "batch",
        upsample: str = "transpose",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.input_multiple = 1  # sizes are checked by valid-size rules instead
        # each level loses 4 px (two 3x3 valid convs) at its resolution, on the way down and up
        self.output_margin = 2 * (3 * 2**depth - 2)
        # tiles must start on the deepest pooling grid for their outputs to agree seamlessly
        self.tile_alignment = 2**depth
        _build_layers(self, in_channels, num_classes, depth, base_width, norm, upsample, dropout, padding=0)

    def output_size(self, size: int) -> int | None:
        """Output length for an input length, or None when ``size`` is not valid."""
        for _ in range(self.depth):
            size -= 4
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= 4
        for _ in range(self.depth):
            size = 2 * size - 4
        return size if size > 0 else None

    def valid_input_size(self, min_output: int) -> int:
        """The smallest valid input length whose output is at least ``min_output``."""
        size = max(1, min_output) + 2 * self.output_margin
        while (out := self.output_size(size)) is None or out < min_output:
            size += 1
        return size

    def crop_target(self, target: torch.Tensor) -> torch.Tensor:
        """Centre-crop a target/weight map ``[..., H, W]`` given at the *input* size to the output."""
        m = self.output_margin
        h, w = target.shape[-2:]
        return center_crop(target, (h - 2 * m, w - 2 * m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for s in x.shape[-2:]:
            if self.output_size(int(s)) is None:
                near = self.valid_input_size(max(1, int(s) - 2 * self.output_margin))
                raise ValueError(
                    f"valid-convolution U-Net (depth {self.depth}) cannot take size {int(s)}; the next valid "
                    f"size is {near} (output {self.output_size(near)}); use medseg.inference.predict_proba "
                    "for overlap-tile inference on any size"
                )
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, dec in zip(self.ups, self.decoders):
            x = up(x)
            x = dec(torch.cat([center_crop(skips.pop(), tuple(x.shape[-2:])), x], dim=1))
        return self.head(x)


@MODELS.register(
    "unet_valid",
    paper="Ronneberger et al., MICCAI 2015 (arXiv:1505.04597)",
    summary="U-Net with valid (unpadded) convolutions, overlap-tile inference (572 -> 388)",
)
def build_unet_valid(
    in_channels: int,
    num_classes: int,
    depth: int = 4,
    base_width: int = 64,
    norm: str = "batch",
    upsample: str = "transpose",
    dropout: float = 0.0,
) -> UNetValid:
    return UNetValid(
        in_channels,
        num_classes,
        depth=depth,
        base_width=base_width,
        norm=norm,
        upsample=upsample,
        dropout=dropout,
    )
