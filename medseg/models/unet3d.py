"""nnU-Net's plain-convolution U-Net (Isensee et al., Nature Methods 2021, arXiv:1809.10486) and
its residual-encoder variant (Isensee et al., "nnU-Net Revisited", MICCAI 2024, arXiv:2404.09556),
in 2 or 3 dimensions from one definition (``dims``).

Every stage has its own per-axis convolution kernel and stride, so anisotropic volumes (thick
slices) are pooled in-plane first and use in-plane kernels (1x3x3) until the spacing evens out:
:func:`plan_topology` derives both from a patch size and a voxel spacing the way nnU-Net's
planner does. The encoder downsamples with strided convolutions, the decoder upsamples with
transposed convolutions whose kernel equals the stride, and every decoder stage can carry a 1x1
deep-supervision head (``forward_aux`` -> ``{"deep_supervision": [...]}``, highest resolution
first, as :mod:`medseg.losses.deep_supervision` expects).

Convolutions followed by a norm have no bias (nnU-Net keeps one; an affine instance norm cancels
it), so parameter counts are a little below nnU-Net's. ResEnc presets (nnU-Net's
``ResEncUNetPlanner``): 1, 3, 4, 6, 6, 6, ... residual blocks per encoder stage, one convolution
per decoder stage, widths 32 doubling to 320. M and L are the *same* network template; nnU-Net
plans L for a 24 GB instead of an 8 GB memory target (about 3.1x the reference voxel budget),
which only enlarges the patch: ``unet3d_resenc_l`` defaults to a 192^3 patch (3.4x the voxels of
M's 128^3 default; 128^3 x 3.1 rounded to a multiple of 32) and otherwise equals M.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medseg.models.blocks import per_axis, transposed_conv_layer
from medseg.models.registry import MODELS
from medseg.models.resenc import ResidualStage, Stem
from medseg.models.unet import INITS, DecoderStagesUNet, DoubleConv, conv_norm_act, he_init, stage_widths

ENCODERS = ("plain", "residual")
# nnU-Net ResEnc presets (M, L, XL alike): residual blocks per encoder stage
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)


def plan_topology(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    *,
    min_size: int = 8,
    max_stages: int | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """Per-stage ``(kernel_sizes, strides)`` for a patch, the way nnU-Net's planner derives them
    (Isensee et al. 2021, "network topology"). At each stage, an axis is halved when its size is
    at least ``min_size`` (twice the 4-voxel minimum bottleneck edge) and its current spacing is
    less than twice the smallest spacing among those axes; a lone poolable axis needs
    ``1.5 * min_size`` voxels. An axis's kernel is 1 until its spacing first comes within twice
    the smallest, 3 from then on; the bottleneck kernel is always 3. The first stage's stride is
    all ones; planning stops when no axis can be halved (or after ``max_stages`` stages). Input
    sizes must then be divisible per axis by the product of the strides.
    """
    size = [int(s) for s in patch_size]
    spac = [1.0] * len(size) if spacing is None else [float(s) for s in spacing]
    if not size or len(spac) != len(size) or min(size) < 1 or min(spac) <= 0:
        raise ValueError(f"plan_topology needs positive sizes and spacings per axis; got {size}, {spac}")
    kernel = [1] * len(size)
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * len(size)]
    while max_stages is None or len(strides) < max_stages:
        big = [a for a, s in enumerate(size) if s >= min_size]
        if not big:
            break
        smallest = min(spac[a] for a in big)
        pool_axes = [a for a in big if spac[a] / smallest < 2]
        if len(pool_axes) == 1 and size[pool_axes[0]] < 1.5 * min_size:
            break
        kernel = [k if k == 3 or s / min(spac) >= 2 else 3 for k, s in zip(kernel, spac)]
        kernels.append(list(kernel))
        strides.append([2 if a in pool_axes else 1 for a in range(len(size))])
        for a in pool_axes:
            size[a], spac[a] = -(-size[a] // 2), spac[a] * 2
    kernels.append([3] * len(size))
    return kernels, strides


def _check_topology(kernels: Sequence[Sequence[int]], strides: Sequence[Sequence[int]], dims: int) -> None:
    if len(kernels) != len(strides) or len(kernels) < 2:
        raise ValueError(
            f"kernel_sizes and strides need one entry per stage (>= 2 stages), got {len(kernels)} and "
            f"{len(strides)}"
        )
    for k, s in zip(kernels, strides):
        per_axis(k, dims, "kernel size")
        per_axis(s, dims, "stride")
    if any(v % 2 == 0 for k in kernels for v in k):
        raise ValueError(f"kernel sizes must be odd (same padding), got {[list(k) for k in kernels]}")
    if any(v < 1 for s in strides for v in s):
        raise ValueError(f"strides must be >= 1, got {[list(s) for s in strides]}")


def _check_options(encoder: str, init: str, base_width: int, max_width: int) -> None:
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got '{encoder}'")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}")
    if max_width < base_width:
        raise ValueError(f"max_width ({max_width}) must be >= base_width ({base_width})")


class PlainConvUNet(DecoderStagesUNet):
    """nnU-Net's U-Net with per-stage, per-axis kernels and strides, in ``dims`` dimensions.

    ``encoder="plain"``: ``n_convs`` conv-norm-act layers per stage, the first strided
    (PlainConvUNet). ``encoder="residual"``: a stem convolution, then ``blocks_per_stage[s]``
    basic residual blocks per stage (ResEnc U-Net). The decoder has ``decoder_convs`` layers per
    stage. Input sizes must be divisible per axis by ``input_multiples`` (the product of the
    strides); ``input_multiple`` is their least common multiple, for padding code that takes
    one number.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        dims: int = 3,
        base_width: int = 32,
        max_width: int = 320,
        norm: str = "instance",
        act: str = "leaky_relu",
        encoder: str = "plain",
        n_convs: int = 2,
        blocks_per_stage: Sequence[int] = RESENC_BLOCKS,
        decoder_convs: int = 2,
        deep_supervision: bool = False,
        init: str = "he",
    ) -> None:
        super().__init__()
        _check_topology(kernel_sizes, strides, dims)
        _check_options(encoder, init, base_width, max_width)
        n_stages = len(strides)
        self.in_channels, self.num_classes, self.dims = in_channels, num_classes, dims
        self.kernel_sizes = [list(k) for k in kernel_sizes]
        self.strides = [list(s) for s in strides]
        self.input_multiples = tuple(math.prod(s[a] for s in strides) for a in range(dims))
        self.input_multiple = math.lcm(*self.input_multiples)
        widths = stage_widths(n_stages - 1, base_width, max_width)
        self.widths = widths
        self.encoders = self._build_encoder(
            widths, norm, act, encoder, n_convs, blocks_per_stage, in_channels
        )
        self.ups, self.decoders = self._build_decoder(widths, norm, act, decoder_convs)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.head = conv(widths[0], num_classes, 1)
        # decoder stage j (lowest resolution first) outputs widths[n_stages - 2 - j] channels
        self.deep_heads = (
            nn.ModuleList(conv(widths[n_stages - 2 - j], num_classes, 1) for j in range(n_stages - 2))
            if deep_supervision
            else None
        )
        self.preferred_memory_format = torch.contiguous_format
        if init == "he":
            he_init(self)

    def _build_decoder(
        self, widths: list[int], norm: str, act: str, decoder_convs: int
    ) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Transposed-conv upsampling and ``decoder_convs`` conv layers per stage, lowest first."""
        ups, decoders = nn.ModuleList(), nn.ModuleList()
        up_conv: Any = transposed_conv_layer(self.dims)  # torch's stubs type the size tuples per dimension
        for s in reversed(range(1, len(widths))):
            st = per_axis(self.strides[s], self.dims, "stride")
            ups.append(up_conv(widths[s], widths[s - 1], st, stride=st))
            decoders.append(
                DoubleConv(
                    2 * widths[s - 1],
                    widths[s - 1],
                    norm,
                    None,
                    act=act,
                    kernel_size=self.kernel_sizes[s - 1],
                    dims=self.dims,
                    n_convs=decoder_convs,
                )
            )
        return ups, decoders

    def _build_encoder(
        self,
        widths: list[int],
        norm: str,
        act: str,
        encoder: str,
        n_convs: int,
        blocks_per_stage: Sequence[int],
        in_channels: int,
    ) -> nn.ModuleList:
        dims, ks, st = self.dims, self.kernel_sizes, self.strides
        if encoder == "plain":
            return nn.ModuleList(
                DoubleConv(
                    in_channels if s == 0 else widths[s - 1],
                    widths[s],
                    norm,
                    None,
                    act=act,
                    stride=st[s],
                    kernel_size=ks[s],
                    dims=dims,
                    n_convs=n_convs,
                )
                for s in range(len(widths))
            )
        if len(blocks_per_stage) < len(widths):
            raise ValueError(f"blocks_per_stage {list(blocks_per_stage)} has fewer than {len(widths)} stages")
        stages = nn.ModuleList(
            [
                Stem(
                    conv_norm_act(
                        in_channels, widths[0], padding=None, norm=norm, act=act, kernel_size=ks[0], dims=dims
                    )
                )
            ]
        )
        for s in range(len(widths)):
            stages.append(
                ResidualStage(
                    widths[s - 1] if s else widths[0],
                    widths[s],
                    blocks_per_stage[s],
                    kernel_size=ks[s],
                    stride=st[s],
                    norm=norm,
                    act=act,
                    dims=dims,
                )
            )
        return stages

    def check_input(self, x: torch.Tensor) -> None:
        """Clear error for a wrong rank, channel count or a size not divisible per axis."""
        if x.ndim != self.dims + 2:
            axes = "H, W" if self.dims == 2 else "D, H, W"
            raise ValueError(f"{type(self).__name__} expects [B, C, {axes}], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channels, got {x.shape[1]}"
            )
        sizes = tuple(int(s) for s in x.shape[2:])
        if any(s % m for s, m in zip(sizes, self.input_multiples)):
            raise ValueError(
                f"{type(self).__name__} needs spatial sizes divisible by {self.input_multiples} per axis "
                f"(the product of its strides), got {sizes}; pad the input or plan another patch size"
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every encoder stage, highest resolution first."""
        self.check_input(x)
        feats = []
        for stage in self.encoders:
            x = stage(x)
            if not isinstance(stage, Stem):
                feats.append(x)
        return feats

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every decoder stage, lowest resolution first (the last is full size)."""
        skips = self.encode(x)
        x = skips.pop()
        outputs = []
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
            outputs.append(x)
        return outputs


def build_plain_unet(
    in_channels: int,
    num_classes: int,
    *,
    patch_size: Sequence[int] = (128, 128, 128),
    spacing: Sequence[float] | None = None,
    kernel_sizes: Sequence[Sequence[int]] | None = None,
    strides: Sequence[Sequence[int]] | None = None,
    max_stages: int | None = None,
    base_width: int = 32,
    max_width: int = 320,
    norm: str = "instance",
    act: str = "leaky_relu",
    encoder: str = "plain",
    n_convs: int = 2,
    blocks_per_stage: Sequence[int] = RESENC_BLOCKS,
    decoder_convs: int = 2,
    deep_supervision: bool = False,
    init: str = "he",
    dims: int = 3,
) -> PlainConvUNet:
    """Build from explicit per-stage ``kernel_sizes`` and ``strides``, or plan both from
    ``patch_size`` and ``spacing`` with :func:`plan_topology` (give both lists or neither)."""
    if (kernel_sizes is None) != (strides is None):
        raise ValueError("give both kernel_sizes and strides, or neither (then they are planned)")
    if kernel_sizes is None or strides is None:
        per_axis(tuple(patch_size), dims, "patch_size")
        kernel_sizes, strides = plan_topology(patch_size, spacing, max_stages=max_stages)
    return PlainConvUNet(
        in_channels,
        num_classes,
        kernel_sizes=kernel_sizes,
        strides=strides,
        dims=dims,
        base_width=base_width,
        max_width=max_width,
        norm=norm,
        act=act,
        encoder=encoder,
        n_convs=n_convs,
        blocks_per_stage=blocks_per_stage,
        decoder_convs=decoder_convs,
        deep_supervision=deep_supervision,
        init=init,
    )


_NNUNET = "Isensee et al., Nature Methods 2021 (arXiv:1809.10486)"
_RESENC = "Isensee et al., nnU-Net Revisited, MICCAI 2024 (arXiv:2404.09556)"
MODELS.add(
    "unet3d",
    build_plain_unet,
    fixed={"dims": 3, "encoder": "plain", "blocks_per_stage": RESENC_BLOCKS},
    dims=3,
    paper=_NNUNET,
    summary="nnU-Net 3-D plain-conv U-Net: per-axis kernels/strides, instance norm, leaky ReLU, "
    "deep supervision",
)
MODELS.add(
    "unet3d_resenc",
    build_plain_unet,
    fixed={"dims": 3, "encoder": "residual", "n_convs": 2},
    defaults={"decoder_convs": 1},
    dims=3,
    paper=_RESENC,
    summary="nnU-Net ResEnc M: residual encoder (1,3,4,6,6,6.. blocks), 32->320 channels",
)
MODELS.add(
    "unet3d_resenc_l",
    build_plain_unet,
    fixed={"dims": 3, "encoder": "residual", "n_convs": 2},
    defaults={"decoder_convs": 1, "patch_size": (192, 192, 192)},
    dims=3,
    paper=_RESENC,
    summary="nnU-Net ResEnc L: the M network planned for a larger (24 GB) patch",
)
