"""Encoders written in the project: VGG-16, ResNet-18/34/50/101, MobileNetV2.

Parameter names follow torchvision, so a torchvision-format state dict (or the same
tensors in a safetensors file) loads with :func:`load_backbone_weights`. Nothing is
ever downloaded: weights come from a local file or not at all.

- VGG-16 (Simonyan & Zisserman, ICLR 2015, arXiv:1409.1556), configuration D, with an
  optional BatchNorm after every convolution (torchvision ``vgg16_bn`` layout).
- ResNet (He et al., CVPR 2016, arXiv:1512.03385); the output stride is reduced from
  32 to 16 or 8 by replacing the stride of the last stages with dilation, as in
  DeepLab (Chen et al. 2017, arXiv:1606.00915, Sec. 3.1) and PSPNet.
- MobileNetV2 (Sandler et al., CVPR 2018, arXiv:1801.04381): inverted residuals of
  depthwise-separable convolutions, the separable backbone option of DeepLab v3+.

The ResNet family (and the shared width rule :func:`scaled`) is written in
:mod:`medseg.models.resnet`; this module re-exports it and builds every backbone by name.

Every backbone offers ``forward_features(x) -> dict`` with ``layer1`` (stride 4),
``layer2`` (8), ``layer3`` (16) and ``layer4`` (32, or less when dilated) and a
``channels`` dict naming their widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from medseg.errors import CheckpointError
from medseg.models.encoder import FeatureEncoder
from medseg.models.resnet import RESNET_LAYERS, BasicBlock, Bottleneck, ResNet, scaled

VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


# --------------------------------------------------------------------------- VGG-16
class VGG16(nn.Module):
    """VGG-16 convolutional part (``features`` like torchvision, indices included).

    ``pools``: per pooling layer ``(kernel, stride, padding)``; ``ceil_mode`` as in Caffe
    (FCN). ``conv5_dilation`` dilates the three conv5 layers (DeepLab v1's atrous VGG).
    ``first_padding`` is the padding of conv1_1 (FCN uses 100).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        batch_norm: bool = False,
        width_mult: float = 1.0,
        pools: Sequence[tuple[int, int, int]] = ((2, 2, 0),) * 5,
        ceil_mode: bool = False,
        conv5_dilation: int = 1,
        first_padding: int = 1,
    ) -> None:
        super().__init__()
        if len(pools) != 5:
            raise ValueError("VGG16 needs 5 pooling specifications")
        layers: list[nn.Module] = []
        self.stage_slices: list[tuple[int, int]] = []  # [start, end) of each stage's convs in features
        self.pool_positions: list[int] = []
        ch, stage, start = in_channels, 0, 0
        for v in VGG16_CFG:
            if v == "M":
                self.stage_slices.append((start, len(layers)))
                k, s, p = pools[stage]
                self.pool_positions.append(len(layers))
                layers.append(nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode))
                stage += 1
                start = len(layers)
                continue
            out = scaled(int(v), width_mult)
            dil = conv5_dilation if stage == 4 else 1
            pad = first_padding if not layers else dil
            layers.append(nn.Conv2d(ch, out, 3, padding=pad, dilation=dil))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            ch = out
        self.features = nn.Sequential(*layers)
        self.out_channels = ch
        self.stage_channels = [scaled(w, width_mult) for w in (64, 128, 256, 512, 512)]
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def stage(self, i: int) -> nn.Sequential:
        """The convolutions (+ BN + ReLU) of stage ``i`` (0..4), without its pooling."""
        a, b = self.stage_slices[i]
        return nn.Sequential(*list(self.features)[a:b])

    def pool(self, i: int) -> nn.MaxPool2d:
        pool = self.features[self.pool_positions[i]]
        assert isinstance(pool, nn.MaxPool2d)
        return pool

    def forward_pools(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of pool1..pool5."""
        outs = []
        for i in range(5):
            x = self.pool(i)(self.stage(i)(x))
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# --------------------------------------------------------------------------- MobileNetV2
class ConvBNReLU6(nn.Sequential):
    """Conv -> BN -> ReLU6 (torchvision ``Conv2dNormActivation`` layout: keys ``0``, ``1``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
    ) -> None:
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expansion 1x1 -> depthwise 3x3 -> linear 1x1 projection (MobileNetV2, Fig. 3b)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


MOBILENETV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(FeatureEncoder):
    """MobileNetV2 ``features`` (torchvision indices); strides beyond ``output_stride``
    become dilations of the depthwise convolutions."""

    def __init__(self, in_channels: int = 3, *, output_stride: int = 32, width_mult: float = 1.0) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        ch = scaled(32, width_mult, 8)
        last = scaled(1280, max(1.0, width_mult), 8)
        feats: list[nn.Module] = [ConvBNReLU6(in_channels, ch, 3, 2)]
        stride, dilation = 2, 1
        self._ends: list[int] = []  # index after which strides 4, 8, 16 are reached
        for t, c, n, s in MOBILENETV2_SETTING:
            out = scaled(c, width_mult, 8)
            if s == 2 and stride >= 4:
                self._ends.append(len(feats))
            for i in range(n):
                st = s if i == 0 else 1
                if st == 2 and stride >= output_stride:
                    dilation *= 2
                    st = 1
                elif st == 2:
                    stride *= 2
                feats.append(InvertedResidual(ch, out, st, t, dilation))
                ch = out
        feats.append(ConvBNReLU6(ch, last, 1))
        self.features = nn.Sequential(*feats)
        # _ends = [4, 7, 14]: features[:4] is stride 4, [:7] stride 8, [:14] stride 16
        self._bounds = [0, *self._ends, len(feats)]
        self.channels = {
            "layer1": scaled(24, width_mult, 8),
            "layer2": scaled(32, width_mult, 8),
            "layer3": scaled(96, width_mult, 8),
            "layer4": last,
        }
        self.output_stride = output_stride

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, a, b in zip(("layer1", "layer2", "layer3", "layer4"), self._bounds[:-1], self._bounds[1:]):
            for m in list(self.features)[a:b]:
                x = m(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


BACKBONES = ("vgg16", "vgg16_bn", *RESNET_LAYERS, "mobilenetv2")


def build_backbone(
    name: str,
    in_channels: int = 3,
    *,
    output_stride: int = 32,
    width_mult: float = 1.0,
    multi_grid: Sequence[int] | None = None,
    weights: str | Path | None = None,
) -> FeatureEncoder:
    """A ResNet or MobileNetV2 encoder with ``forward_features`` (see the module docstring)."""
    if name in RESNET_LAYERS:
        net: FeatureEncoder = ResNet(
            name, in_channels, output_stride=output_stride, width_mult=width_mult, multi_grid=multi_grid
        )
    elif name == "mobilenetv2":
        if multi_grid is not None:
            raise ValueError("multi_grid applies to ResNet backbones only")
        net = MobileNetV2(in_channels, output_stride=output_stride, width_mult=width_mult)
    else:
        raise ValueError(
            f"unknown backbone '{name}'; choose one of {', '.join([*RESNET_LAYERS, 'mobilenetv2'])}"
        )
    if weights is not None:
        load_backbone_weights(net, weights)
    return net


# --------------------------------------------------------------------------- weights
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch state dict (``weights_only=True``:
    no arbitrary code is unpickled). A dict holding ``state_dict``/``model`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        inner = state.get(key) if isinstance(state, dict) else None
        if isinstance(inner, dict):
            state = inner
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def load_backbone_weights(module: nn.Module, path: str | Path, *, prefix: str = "") -> list[str]:
    """Load the matching tensors of a torchvision-format file into ``module``.

    Keys are matched by name after stripping ``prefix`` (e.g. ``"backbone."``); the
    classifier (``fc.*`` / ``classifier.*``) of ImageNet files is ignored. A first
    convolution with a different input-channel count is adapted by cycling the RGB
    filters and rescaling. Returns the module's keys that stayed at initialisation;
    raises :class:`CheckpointError` for a shape mismatch or when nothing matches.
    """
    state = {k[len(prefix) :]: v for k, v in read_state_dict(path).items() if k.startswith(prefix)}
    own = module.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            continue
        target = own[key]
        if value.shape != target.shape:
            if value.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
                idx = torch.arange(target.shape[1]) % value.shape[1]
                value = value[:, idx] * (value.shape[1] / target.shape[1])
            else:
                raise CheckpointError(
                    f"{path}: '{key}' has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                )
        loaded[key] = value.to(target.dtype)
    if not loaded:
        raise CheckpointError(
            f"{path}: no tensor name matches this backbone (prefix '{prefix}'); "
            "expected torchvision-style names such as "
            f"{', '.join(list(own)[:3])}"
        )
    module.load_state_dict(loaded, strict=False)
    return [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]


# the ResNet family lives in medseg.models.resnet; re-exported so that every name stays importable here
__all__ = [
    "BACKBONES",
    "RESNET_LAYERS",
    "VGG16",
    "VGG16_CFG",
    "BasicBlock",
    "Bottleneck",
    "ConvBNReLU6",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
    "build_backbone",
    "load_backbone_weights",
    "read_state_dict",
    "scaled",
]
