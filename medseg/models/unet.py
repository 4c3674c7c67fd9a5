"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597), and the nnU-Net
plain-convolution variant of it (Isensee et al., Nature Methods 2021, arXiv:1809.10486).

The padded variant: 3x3 convolutions keep the size, so the output matches the input
for any H, W divisible by 2**depth. The paper's configuration is depth 4, base
width 64, no normalisation (about 31.0 M parameters).

Options turn it into nnU-Net's 2-D ``PlainConvUNet``: ``norm="instance"`` (affine),
``act="leaky_relu"`` (slope 0.01), ``downsample="strided"`` (the first convolution of
each deeper stage has stride 2 instead of a max-pool), transposed-convolution
upsampling (the default), ``max_width=512`` (widths double per stage up to the cap),
``init="he"`` (Kaiming-normal weights for slope 0.01, zero biases), a depth from
:func:`depth_for_size` (stages until the bottleneck is 4-8 px) and
``deep_supervision=True`` (a 1x1 head on every decoder stage; ``forward_aux`` returns
their logits, see :mod:`medseg.losses.deep_supervision`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.base import SegmentationModel
from medseg.models.blocks import ConvNormAct, IntOrSeq
from medseg.models.registry import MODELS

ACTS = ("relu", "leaky_relu")
DOWNSAMPLES = ("maxpool", "strided")
INITS = ("torch", "he")
LEAKY_SLOPE = 0.01  # nnU-Net's LeakyReLU negative slope


def depth_for_size(size: int | Sequence[int], min_bottleneck: int = 4) -> int:
    """Number of 2x downsamplings for a patch of ``size`` (an int or ``(H, W)``): the largest
    depth whose bottleneck still has ``min_bottleneck`` pixels or more along the shortest side.

    nnU-Net's planner keeps halving until a further halving would leave fewer than 4 pixels,
    so its bottleneck is 4-8 px (Isensee et al. 2021, "network topology"). The model then needs
    H and W divisible by ``2**depth`` (``input_multiple``).
    """
    sides = [int(size)] if isinstance(size, int) else [int(s) for s in size]
    if not sides or min(sides) < 1 or min_bottleneck < 1:
        raise ValueError(
            f"depth_for_size needs positive sizes and min_bottleneck; got {size}, {min_bottleneck}"
        )
    depth, side = 0, min(sides)
    while side // 2 ** (depth + 1) >= min_bottleneck:
        depth += 1
    return depth


def activation(act: str) -> nn.Module:
    """``relu`` or nnU-Net's ``leaky_relu`` (slope 0.01), in place."""
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if act == "leaky_relu" else nn.ReLU(inplace=True)


def conv_norm_act(
    in_ch: int,
    out_ch: int,
    *,
    stride: IntOrSeq = 1,
    padding: IntOrSeq | None = 1,
    norm: str = "batch",
    act: str = "relu",
    kernel_size: IntOrSeq = 3,
    dims: int = 2,
) -> ConvNormAct:
    """Convolution (3x3 unless ``kernel_size`` says otherwise; ``dims`` 2 or 3) -> norm ->
    ReLU or LeakyReLU(0.01); ``act="none"`` stops after the norm (a residual block's last layer)."""
    if act not in (*ACTS, "none"):
        raise ValueError(f"unknown act '{act}'; choose one of {', '.join(ACTS)}")
    layer = ConvNormAct(
        in_ch, out_ch, kernel_size, stride=stride, padding=padding, norm=norm, act=act == "relu", dims=dims
    )
    if act == "leaky_relu":
        layer.append(activation(act))
    return layer


class DoubleConv(nn.Sequential):
    """``n_convs`` (2: U-Net's pair) conv-norm-act layers; the first one carries the stride."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm: str,
        padding: IntOrSeq | None = 1,
        *,
        act: str = "relu",
        stride: IntOrSeq = 1,
        kernel_size: IntOrSeq = 3,
        dims: int = 2,
        n_convs: int = 2,
    ) -> None:
        if n_convs < 1:
            raise ValueError(f"a convolution stage needs n_convs >= 1, got {n_convs}")
        super().__init__(
            *(
                conv_norm_act(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    stride=stride if i == 0 else 1,
                    padding=padding,
                    norm=norm,
                    act=act,
                    kernel_size=kernel_size,
                    dims=dims,
                )
                for i in range(n_convs)
            )
        )


def stage_widths(depth: int, base_width: int, max_width: int | None = None) -> list[int]:
    """Channel widths of the ``depth + 1`` encoder stages: ``base_width * 2**i``, capped at ``max_width``."""
    widths = [base_width * 2**i for i in range(depth + 1)]
    return widths if max_width is None else [min(w, max_width) for w in widths]


def he_init(model: nn.Module, slope: float = LEAKY_SLOPE) -> None:
    """nnU-Net's initialisation: Kaiming-normal weights (He et al. 2015) for a leaky slope, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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
    *,
    act: str = "relu",
    downsample: str = "maxpool",
    max_width: int | None = None,
) -> None:
    """Encoder, decoder and head shared by the padded (``padding=1``) and valid (``padding=0``) U-Nets."""
    if depth < 1:
        raise ValueError("U-Net depth must be >= 1")
    if upsample not in ("transpose", "bilinear"):
        raise ValueError("upsample must be 'transpose' or 'bilinear'")
    if downsample not in DOWNSAMPLES:
        raise ValueError(f"downsample must be one of {', '.join(DOWNSAMPLES)}")
    if max_width is not None and max_width < base_width:
        raise ValueError(f"max_width ({max_width}) must be >= base_width ({base_width})")
    widths = stage_widths(depth, base_width, max_width)
    stride = 2 if downsample == "strided" else 1
    model.encoders = nn.ModuleList([DoubleConv(in_channels, widths[0], norm, padding, act=act)])
    model.encoders.extend(
        DoubleConv(widths[i], widths[i + 1], norm, padding, act=act, stride=stride) for i in range(depth)
    )
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
        model.decoders.append(DoubleConv(2 * widths[i], widths[i], norm, padding, act=act))
    model.head = nn.Conv2d(widths[0], num_classes, 1)


class DecoderStagesUNet(SegmentationModel):
    """What medseg's U-Nets share once ``_decode`` gives the features of every decoder stage,
    lowest resolution first: ``forward`` is the 1x1 ``head`` on the last (full-size) stage, and
    with ``deep_heads`` ``forward_aux`` adds one logit map per other stage under
    ``"deep_supervision"``, highest resolution first (the ``deep_supervision`` loss's order)."""

    head: nn.Module
    deep_heads: nn.ModuleList | None

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._decode(x)[-1])

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.deep_heads is None:
            return self.forward(x), {}
        feats = self._decode(x)
        deep = [head(f) for head, f in zip(self.deep_heads, feats[:-1])]
        return self.head(feats[-1]), {"deep_supervision": deep[::-1]}


class UNet(DecoderStagesUNet):
    """Encoder of ``depth`` down-sampling stages (max-pool or strided convolution), widths
    ``base_width * 2**i`` (capped at ``max_width``); decoder of 2x2 up-convolutions (or bilinear
    upsampling) and skip concatenation.

    With ``deep_supervision=True`` every decoder stage but the last gets a 1x1 head and
    ``forward_aux(x)`` returns ``(logits, {"deep_supervision": [1/2, 1/4, ... scale logits]})``,
    highest resolution first (nnU-Net, Isensee et al. 2021; Lee et al. 2015, deeply-supervised
    nets). ``forward`` stays the plain full-resolution logits.
    """

    encoders: nn.ModuleList
    ups: nn.ModuleList
    decoders: nn.ModuleList
    dropout: nn.Module
    head: nn.Module

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
        act: str = "relu",
        downsample: str = "maxpool",
        max_width: int | None = None,
        deep_supervision: bool = False,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = 2**depth
        self.pool = downsample == "maxpool"
        _build_layers(
            self,
            in_channels,
            num_classes,
            depth,
            base_width,
            norm,
            upsample,
            dropout,
            padding=1,
            act=act,
            downsample=downsample,
            max_width=max_width,
        )
        widths = stage_widths(depth, base_width, max_width)
        # decoder stage j outputs widths[depth - 1 - j] channels at 1/2**(depth - 1 - j) scale
        self.deep_heads = (
            nn.ModuleList(nn.Conv2d(widths[depth - 1 - j], num_classes, 1) for j in range(depth - 1))
            if deep_supervision
            else None
        )
        if init == "he":
            he_init(self)

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every decoder stage, lowest resolution first (the last is full size)."""
        self.check_input(x)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 or not self.pool else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.dropout(skips.pop())
        outputs = []
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
            outputs.append(x)
        return outputs


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

    encoders: nn.ModuleList
    ups: nn.ModuleList
    decoders: nn.ModuleList
    dropout: nn.Module
    head: nn.Module

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
            x = dec(torch.cat([center_crop(skips.pop(), (int(x.shape[-2]), int(x.shape[-1]))), x], dim=1))
        return self.head(x)


MODELS.add(
    "unet",
    UNet,
    paper="Ronneberger et al., MICCAI 2015 (arXiv:1505.04597); plain-conv options: Isensee et al. 2021",
    summary="U-Net with padded convolutions (nnU-Net plain-conv options: instance norm, leaky ReLU, "
    "strided convs, deep supervision)",
)
MODELS.add(
    "unet_valid",
    UNetValid,
    paper="Ronneberger et al., MICCAI 2015 (arXiv:1505.04597)",
    summary="U-Net with valid (unpadded) convolutions, overlap-tile inference (572 -> 388)",
)
