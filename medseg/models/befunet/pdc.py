"""Pixel-difference convolutions and the BEFUnet edge encoder.

Pixel-difference convolution (PDC; Su et al., "Pixel Difference Networks for Efficient
Edge Detection", ICCV 2021) replaces the weighted sum of pixels of a vanilla
convolution (BEFUnet paper eq. 1) by a weighted sum of pixel *differences* (eq. 2):

    y = sum_{(x_i, x_i') in P} w_i * (x_i - x_i')

The pair set P gives the four forms used here:

- ``cv``  vanilla: no pairs, y = sum_i w_i x_i;
- ``cd``  central: each pixel of the 3x3 window against the centre;
- ``ad``  angular: each ring pixel against its clockwise neighbour on the 3x3 ring;
- ``rd``  radial: in 8 directions, the pixel at distance 2 against the one at distance 1
  (a 5x5 receptive field).

Every form is linear in x, so it equals a vanilla convolution with a rearranged kernel
(3x3 for cv/cd/ad, 5x5 for rd). Training computes that kernel from the difference
weights on the fly (one convolution per call); ``to_conv`` bakes it into a plain
``nn.Conv2d`` for inference (re-parameterisation, identical outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PDC_MODES = ("cv", "cd", "ad", "rd")

# 3x3 positions, row-major: 0 1 2 / 3 4 5 / 6 7 8. Clockwise ring successor of each
# ring pixel (3 -> 0 -> 1 -> 2 -> 5 -> 8 -> 7 -> 6 -> 3): the "ad" pairs (x_i, x_succ(i)).
RING_SUCCESSOR = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}
# "rd": the weight at 3x3 position d (a direction from the centre) pairs the 5x5 pixel at
# distance 2 in that direction (outer) with the one at distance 1 (inner).
RADIAL_DIRECTIONS = {
    0: (-1, -1),
    1: (-1, 0),
    2: (-1, 1),
    3: (0, -1),
    5: (0, 1),
    6: (1, -1),
    7: (1, 0),
    8: (1, 1),
}


def pdc_kernel(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """The vanilla kernel equal to the pixel-difference convolution ``mode`` with 3x3
    difference weights ``weight`` [O, I, 3, 3]: 3x3 for cv/cd/ad, 5x5 for rd."""
    if mode == "cv":
        return weight
    if mode == "cd":
        # sum_i w_i (x_i - x_c) = sum_i w_i x_i - (sum_i w_i) x_c
        centre = weight.sum(dim=(2, 3))
        kernel = weight.clone()
        kernel[:, :, 1, 1] = kernel[:, :, 1, 1] - centre
        return kernel
    if mode == "ad":
        # sum_i w_i (x_i - x_succ(i)): x_j receives +w_j and -w_pred(j); the centre is unused.
        flat = weight.flatten(2)
        pred = [0] * 9
        for i, j in RING_SUCCESSOR.items():
            pred[j] = i
        ring = [0, 1, 2, 3, 5, 6, 7, 8]
        kernel = torch.zeros_like(flat)
        kernel[:, :, ring] = flat[:, :, ring] - flat[:, :, [pred[j] for j in ring]]
        return kernel.view_as(weight)
    if mode == "rd":
        o, i = weight.shape[:2]
        kernel = weight.new_zeros(o, i, 5, 5)
        for d, (dy, dx) in RADIAL_DIRECTIONS.items():
            w = weight[:, :, d // 3, d % 3]
            kernel[:, :, 2 + 2 * dy, 2 + 2 * dx] = w
            kernel[:, :, 2 + dy, 2 + dx] = -w
        return kernel
    raise ValueError(f"unknown PDC mode '{mode}'; choose one of {', '.join(PDC_MODES)}")


class PixelDifferenceConv2d(nn.Module):
    """A 3x3 pixel-difference convolution (paper eq. 2) with 'same' padding.

    Parameters are the 3x3 difference weights; the forward pass is one convolution with
    the equivalent kernel (``pdc_kernel``), so training costs what a vanilla conv costs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mode: str = "cd",
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if mode not in PDC_MODES:
            raise ValueError(f"unknown PDC mode '{mode}'; choose one of {', '.join(PDC_MODES)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mode, self.stride, self.groups = mode, stride, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @property
    def kernel_size(self) -> int:
        return 5 if self.mode == "rd" else 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.conv2d(
            x,
            pdc_kernel(self.weight, self.mode),
            self.bias,
            stride=self.stride,
            padding=k // 2,
            groups=self.groups,
        )

    @torch.no_grad()
    def to_conv(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` giving the same output (inference re-parameterisation)."""
        k = self.kernel_size
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            k,
            stride=self.stride,
            padding=k // 2,
            groups=self.groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(pdc_kernel(self.weight, self.mode))
        if self.bias is not None and conv.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, mode={self.mode}, stride={self.stride}, groups={self.groups}"


def reparameterize_pdc(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``PixelDifferenceConv2d`` under ``module`` by its vanilla
    ``nn.Conv2d`` equivalent; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, PixelDifferenceConv2d):
            setattr(module, name, child.to_conv())
        else:
            reparameterize_pdc(child)
    return module


class PDCBlock(nn.Module):
    """Depthwise PDC -> ReLU -> 1x1 conv, with a residual (paper §3.1.1; PiDiNet block).

    When the width changes (first block of a stage) the residual goes through a 1x1 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str) -> None:
        super().__init__()
        self.dw = PixelDifferenceConv2d(in_channels, in_channels, mode, groups=in_channels)
        self.act = nn.ReLU(inplace=True)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.pw(self.act(self.dw(x)))


class EdgeEncoder(nn.Module):
    """The edge branch (paper §3.1.1): 4 stages x ``blocks`` PDC blocks, max-pooling between
    stages, one edge side head per stage.

    Stage 1 maps the input channels to ``widths[0]`` with a central-difference PDC (taking
    differences of neighbouring full-resolution pixels, evaluated at stride 2) and max-pools
    by 2, so stage s works at 1/2**(s+1) of the input, the resolution of Swin stage s. PDC modes
    cycle through ``pattern`` inside each stage (PiDiNet's "carv4" layout: cd, ad, rd, cv).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        *,
        blocks: int = 4,
        pattern: tuple[str, ...] = ("cd", "ad", "rd", "cv"),
        heads: bool = True,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError("the edge encoder needs at least one PDC block per stage")
        self.widths = tuple(widths)
        self.stem = PixelDifferenceConv2d(in_channels, widths[0], "cd", stride=2)
        self.stages = nn.ModuleList()
        for s, width in enumerate(widths):
            prev = widths[s - 1] if s else widths[0]
            layers: list[nn.Module] = [nn.MaxPool2d(2)]
            layers += [
                PDCBlock(prev if b == 0 else width, width, pattern[b % len(pattern)]) for b in range(blocks)
            ]
            self.stages.append(nn.Sequential(*layers))
        # Side heads: one edge map (logits) per stage, for the edge supervision of §3.3.1
        # (``heads=False``: none, as in the official code, which has no edge supervision).
        self.heads = nn.ModuleList(nn.Conv2d(w, 1, 1) for w in widths) if heads else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage edge features [B, widths[s], H / 2**(s+2), W / 2**(s+2)]."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def edge_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-stage edge maps (logits [B, 1, h_s, w_s]) from the stage features."""
        if self.heads is None:
            raise ValueError("this edge encoder was built without edge heads (heads=False)")
        return [head(f) for head, f in zip(self.heads, feats)]
