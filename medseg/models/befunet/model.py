"""BEFUnet (Manzari et al., "BEFUnet: A Hybrid CNN-Transformer Architecture for Precise
Medical Image Segmentation", arXiv:2402.08793, 2024).

Data flow (paper Fig. 1):

    image -> edge encoder (PDC, 4 stages)        E_1 .. E_4 ----------+--> edge heads (aux)
          -> Swin body encoder: stage s blocks -> B_s --LCAF(E_s, B_s)-> F_s -> patch merging -> stage s+1
    DLF(F_1, F_4) -> decoder -> logits at the input size

``forward`` returns logits; ``forward_aux`` also returns ``{"edges": [E_s logits
[B, 1, H/2**(s+1), W/2**(s+1)] for s = 1..4]}`` for the edge supervision (paper eq. 14),
computed by the ``befunet`` loss.

``design="matched"`` (config: ``model: {name: befunet, options: {design: matched}}``) does the official code's work and no
more, for like-for-like speed comparisons: the edge features are projected and added to the body
features (``EdgeAdd``) instead of LCAF, the edge encoder has the official PiDiNet-small widths
(30-60-120-120 for the 96-wide body, scaled with ``embed_dim``) and no edge heads
(``forward_aux`` returns no edge maps), and DLF is unchanged (its self-attention outputs are used,
which the official code computes and then discards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.models.base import SegmentationModel
from medseg.models.befunet.decoder import BEFUnetDecoder
from medseg.models.befunet.dlf import DLF
from medseg.models.befunet.edge_add import EdgeAdd
from medseg.models.befunet.lcaf import LCAF
from medseg.models.befunet.pdc import EdgeEncoder, reparameterize_pdc
from medseg.models.befunet.swin import SwinTransformer, _init_weights, load_swin_weights
from medseg.models.registry import MODELS

PAPER = "Manzari et al., BEFUnet, arXiv:2402.08793 (2024)"
DESIGNS = ("paper", "matched")
# PiDiNet-small stage widths, used by the official code's edge branch (for a 96-wide Swin-T body)
PIDINET_SMALL_WIDTHS = (30, 60, 120, 120)


def matched_edge_widths(embed_dim: int) -> tuple[int, ...]:
    """The official edge widths scaled to a body of width ``embed_dim`` (exact for 96)."""
    return tuple(max(1, round(w * embed_dim / 96)) for w in PIDINET_SMALL_WIDTHS)


def _build_dlf(
    dims: tuple[int, ...],
    num_heads: tuple[int, ...],
    img_size: int,
    dlf_depths: tuple[int, int],
    dlf_heads: tuple[int, int] | None,
    dlf_mlp_ratio: float,
) -> DLF:
    """The DLF over the stride-4 and stride-32 levels (official heads (6, 12) for the tiny model)."""
    if dlf_heads is None:
        dlf_heads = (num_heads[0] * 2, num_heads[-1] // 2)
    if len(dlf_depths) != 2 or len(dlf_heads) != 2:
        raise ValueError("DLF has 2 levels: give 2 dlf_depths and 2 dlf_heads")
    grids = ((img_size // 4,) * 2, (img_size // 32,) * 2)
    depths2, heads2 = (dlf_depths[0], dlf_depths[1]), (dlf_heads[0], dlf_heads[1])
    return DLF((dims[0], dims[-1]), grids, depths2, heads2, dlf_mlp_ratio)


class BEFUnet(SegmentationModel):
    """Body/edge dual-branch encoder with LCAF at every level, DLF and a conv decoder.

    ``design``: ``"paper"`` (default) or ``"matched"`` (additive edge fusion, no edge heads; see
    the module docstring). ``edge_widths``: edge-encoder widths per stage (default: the body
    widths for the paper design, :func:`matched_edge_widths` for the matched one).

    H and W must be multiples of 32 (``input_multiple``); windows that do not tile a
    stage's map are padded and masked inside the attention.
    """

    input_multiple = 32
    preferred_memory_format = torch.contiguous_format  # Swin works on token sequences

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        edge_blocks: int = 4,
        lcaf_window: int | None = 7,
        lcaf_mlp_ratio: float = 2.0,
        dlf_depths: tuple[int, int] = (1, 2),
        dlf_heads: tuple[int, int] | None = None,
        dlf_mlp_ratio: float = 2.0,
        decoder_channels: int = 128,
        img_size: int = 224,
        swin_weights: str | Path | None = None,
        design: str = "paper",
        edge_widths: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError("BEFUnet has 4 stages: give 4 depths and 4 head counts")
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
        if design not in DESIGNS:
            raise ValueError(f"unknown BEFUnet design {design!r}; choose one of {', '.join(DESIGNS)}")
        self.in_channels, self.num_classes, self.design = in_channels, num_classes, design
        self.body = SwinTransformer(
            in_channels, embed_dim, tuple(depths), tuple(num_heads), window_size, mlp_ratio, drop_path_rate
        )
        dims = self.body.dims
        paper = design == "paper"
        if edge_widths is None:
            edge_widths = dims if paper else matched_edge_widths(embed_dim)
        if len(edge_widths) != 4:
            raise ValueError(f"BEFUnet has 4 stages: give 4 edge widths, got {tuple(edge_widths)}")
        self.edge = EdgeEncoder(in_channels, tuple(edge_widths), blocks=edge_blocks, heads=paper)
        self.lcaf: nn.ModuleList | None = None
        self.edge_add: nn.ModuleList | None = None
        if paper:
            if tuple(edge_widths) != dims:
                raise ValueError(f"LCAF needs edge widths equal to the body widths {dims}, got {edge_widths}")
            self.lcaf = fusion = nn.ModuleList(
                LCAF(d, h, lcaf_window, lcaf_mlp_ratio) for d, h in zip(dims, num_heads)
            )
        else:
            self.edge_add = fusion = nn.ModuleList(EdgeAdd(e, d) for e, d in zip(edge_widths, dims))
        self.dlf = _build_dlf(dims, num_heads, img_size, dlf_depths, dlf_heads, dlf_mlp_ratio)
        self.decoder = BEFUnetDecoder(dims[0], dims[-1], num_classes, channels=decoder_channels)
        fusion.apply(_init_weights)
        self.dlf.apply(_init_weights)
        if swin_weights is not None:
            load_swin_weights(self.body, swin_weights)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Edge features ([B, C, H, W] in channels_last memory) and fused levels (channels-last).

        The edge branch runs in channels_last memory whatever the model's format: its depthwise
        pixel-difference convolutions train 1.5x faster so on this CPU (docs/bench/befunet.md), and
        the fusion reads the features channels-last anyway (the permute below is then free)."""
        edges = self.edge(x.contiguous(memory_format=torch.channels_last))
        fused = []
        b = self.body.patch_embed(x)
        for s, layer in enumerate(self.body.stages()):
            b = layer.forward_blocks(b)
            b = self._fuse(s, edges[s].permute(0, 2, 3, 1), b)
            fused.append(b)
            if layer.downsample is not None:
                b = layer.downsample(b)
        return edges, fused

    def _fuse(self, stage: int, edge: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """LCAF (paper) or projected addition (matched) of channels-last edge and body features."""
        fusion = self.lcaf if self.lcaf is not None else self.edge_add
        assert fusion is not None
        return fusion[stage](edge, body)

    def _decode(self, fused: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        small, large = self.dlf(fused[0], fused[-1])
        return self.decoder(small.permute(0, 3, 1, 2), large.permute(0, 3, 1, 2), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        _, fused = self._encode(x)
        return self._decode(fused, (x.shape[-2], x.shape[-1]))

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Logits and ``{"edges": [...]}`` (paper design); the matched design has no edge heads
        and returns an empty dict."""
        self.check_input(x)
        edges, fused = self._encode(x)
        logits = self._decode(fused, (x.shape[-2], x.shape[-1]))
        return (logits, {"edges": self.edge.edge_logits(edges)}) if self.design == "paper" else (logits, {})

    def reparameterize(self) -> BEFUnet:
        """Turn every pixel-difference convolution into its equivalent vanilla convolution
        (for inference / export; the outputs do not change). Returns ``self``."""
        reparameterize_pdc(self.edge)
        return self


# Registered names: the defaults each changes in :class:`BEFUnet` (all stay options) and a summary.
# "befunet" is the paper's configuration (Swin-Tiny body encoder); the matched design is an option
# (``design="matched"``) of both names, not a registered name of its own.
BEFUNET_PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "befunet": (
        {},
        "BEFUnet-T: PDC edge encoder + Swin-T body encoder (96, 2-2-6-2), LCAF, DLF, edge supervision",
    ),
    "befunet_small": (
        {"embed_dim": 48, "depths": (2, 2, 2, 2), "decoder_channels": 64},
        "BEFUnet, CPU-friendly: width 48, Swin depths 2-2-2-2, decoder 64 (about 1/4 of the FLOPs)",
    ),
}
for _name, (_defaults, _summary) in BEFUNET_PRESETS.items():
    MODELS.add(_name, BEFUnet, defaults=_defaults, paper=PAPER, summary=_summary)
