"""Shared layers: convolution + normalisation + activation, separable convolutions."""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "instance", "group", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: batch, instance, group (8 or fewer groups) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'; choose one of {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> ReLU. ``padding=None`` keeps the size ("same" for odd kernels)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "batch",
        act: bool = True,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
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
        layers.append(make_norm(norm, out_ch))
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
