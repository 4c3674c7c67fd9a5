"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017, arXiv:1511.00561).

Encoder: the 13 convolutions of VGG-16 with BatchNorm; each 2x2 max-pooling records
the argmax positions. Decoder: the mirror image; each stage first *unpools* with the
indices of the matching encoder pooling (``MaxUnpool2d``, Sec. 3 and Fig. 3), which
gives a sparse map that the following convolutions densify. No feature maps are
passed from encoder to decoder, only indices. The last decoder convolution outputs
the class scores (about 29.4 M parameters with 21 classes).

Unpooling uses the pre-pooling size, so odd sizes work: ``input_multiple`` is 1.

``deep_supervision=True`` adds a 1x1 head on each of the first four decoder stages (scales 1/16
to 1/2): ``forward_aux`` then returns their logits under ``"deep_supervision"``, highest
resolution first, for the ``deep_supervision`` loss (nnU-Net's weighting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.backbones import VGG16, load_backbone_weights, scaled
from medseg.models.blocks import ConvNormAct
from medseg.models.registry import MODELS
from medseg.models.unet import DecoderStagesUNet

# decoder stages mirror the encoder: (number of convs, width of all but the last, width of the last)
_DECODER = ((3, 512, 512), (3, 512, 256), (3, 256, 128), (2, 128, 64), (2, 64, None))


class SegNet(DecoderStagesUNet):
    """VGG-16-BN encoder, decoder upsampled by the encoder's max-pooling indices (module docstring)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width_mult: float = 1.0,
        norm: str = "batch",
        backbone_weights: str | None = None,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_multiple = 1
        self.encoder = VGG16(in_channels, batch_norm=True, width_mult=width_mult)
        if backbone_weights is not None:
            load_backbone_weights(self.encoder, backbone_weights)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.decoder = nn.ModuleList()
        for n, width, last in _DECODER:
            w = scaled(width, width_mult)
            layers: list[nn.Module] = [ConvNormAct(w, w, 3, norm=norm) for _ in range(n - 1)]
            if last is None:  # the final layer produces class scores (no norm, no ReLU)
                layers.append(nn.Conv2d(w, num_classes, 3, padding=1))
            else:
                layers.append(ConvNormAct(w, scaled(last, width_mult), 3, norm=norm))
            self.decoder.append(nn.Sequential(*layers))
        self.head = nn.Identity()  # the last decoder stage already gives the class scores
        widths = [scaled(last, width_mult) for _, _, last in _DECODER[:-1]]
        self.deep_heads = (
            nn.ModuleList(nn.Conv2d(w, num_classes, 1) for w in widths) if deep_supervision else None
        )

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every decoder stage, coarsest (1/16) first; the last is the class scores."""
        self.check_input(x)
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for i in range(5):
            x = self.encoder.stage(i)(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            pooled.append((idx, size))
        outputs = []
        for dec in self.decoder:
            idx, size = pooled.pop()
            x = dec(self.unpool(x, idx, output_size=size))
            outputs.append(x)
        return outputs


MODELS.add(
    "segnet",
    SegNet,
    paper="Badrinarayanan et al., TPAMI 2017 (arXiv:1511.00561)",
    summary="SegNet: VGG-16-BN encoder, decoder upsampled by max-pooling indices",
)
