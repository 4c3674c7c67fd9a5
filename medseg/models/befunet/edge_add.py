"""Additive edge fusion: the official BEFUnet code's whole fusion of the two branches.

The official implementation (Omid-Nejati/BEFUnet, ``models/Encoder.py``) projects each edge
stage's features to the body width with a 1x1 projection and adds them to the Swin stage's
output; it has no LCAF. ``BEFUnet(design="matched")`` uses this module in place of LCAF, so
that the model does the official code's work and no more (see docs/befunet.md).

    F_s = B_s + E_s W_s + b_s           (per token; W_s: edge width -> body width)
"""

from __future__ import annotations

import torch
from torch import nn


class EdgeAdd(nn.Module):
    """Project channels-last edge features to the body width and add them to the body features."""

    def __init__(self, edge_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(edge_dim, dim)

    def forward(self, edge: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """edge [B, H, W, C_edge], body [B, H, W, C] (channels-last, same grid) -> [B, H, W, C]."""
        return body + self.proj(edge)
