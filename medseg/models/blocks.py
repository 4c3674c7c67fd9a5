"""Shared layers: convolution + normalisation + activation, separable convolutions.

The convolution and normalisation layers take ``dims`` (2 or 3), so one block definition serves
the 2-D zoo and the volumetric models; 2 is the default everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

NORMS = ("batch", "instance", "group", "none")
DIMS = (2, 3)
IntOrSeq = int | Sequence[int]


def _check_dims(dims: int) -> None:
    if dims not in DIMS:
        raise ValueError(f"dims must be 2 or 3, got {dims}")


def conv_layer(dims: int = 2) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    _check_dims(dims)
    return nn.Conv2d if dims == 2 else nn.Conv3d


def transposed_conv_layer(dims: int = 2) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    _check_dims(dims)
    return nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d


def per_axis(value: IntOrSeq, dims: int, what: str = "value") -> tuple[int, ...]:
    """``value`` repeated over ``dims`` axes (an int) or checked to have ``dims`` entries."""
    if isinstance(value, int):
        return (value,) * dims
    out = tuple(int(v) for v in value)
    if len(out) != dims:
        raise ValueError(f"{what} {list(out)} needs {dims} entries, one per spatial axis")
    return out


def same_padding(kernel_size: IntOrSeq, dims: int = 2, dilation: int = 1) -> tuple[int, ...]:
    """Per-axis padding that keeps the size for odd kernels."""
    return tuple(dilation * (k - 1) // 2 for k in per_axis(kernel_size, dims, "kernel_size"))


def make_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """Normalisation layer by name: batch, instance (affine), group (8 or fewer groups) or none."""
    _check_dims(dims)
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if kind == "instance":
        cls = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'; choose one of {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> ReLU in ``dims`` (2 or 3) dimensions; kernel, stride and padding may be
    per-axis lists. ``padding=None`` keeps the size ("same" for odd kernels)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntOrSeq = 3,
        *,
        stride: IntOrSeq = 1,
        padding: IntOrSeq | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "batch",
        act: bool = True,
        dims: int = 2,
    ) -> None:
        if padding is None:
            padding = same_padding(kernel_size, dims, dilation)
        kernel_size = per_axis(kernel_size, dims, "kernel_size")
        stride = per_axis(stride, dims, "stride")
        padding = per_axis(padding, dims, "padding")
        conv: Any = conv_layer(dims)  # torch's stubs type the size tuples per dimension
        layers: list[nn.Module] = [
            conv(
                in_ch,
                out_ch,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=norm == "none",
            )
        ]
        layers.append(make_norm(norm, out_ch, dims))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise (optionally dilated) conv -> norm -> ReLU -> pointwise conv -> norm -> ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, *, dilation: int = 1, norm: str = "batch"
    ) -> None:
        super().__init__(
            ConvNormAct(in_ch, in_ch, kernel_size, dilation=dilation, groups=in_ch, norm=norm),
            ConvNormAct(in_ch, out_ch, 1, norm=norm),
        )
