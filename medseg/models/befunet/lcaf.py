"""Local cross-attention fusion (LCAF; BEFUnet paper §3.2, eq. 9-11).

Edge features are the queries, body features the keys and values, and attention is
restricted to local windows of spatially close tokens (``window`` x ``window``): the edge
token at a position only sees body tokens of its own window, using the one-to-one spatial
correspondence of the two modalities.

    LCA(X_f)    = softmax(X_edge W_Q (X_body W_K)^T / sqrt(d_k)) X_body W_V      (per window, per head)
    M-LCA(X_f)  = X_f + Concat[LCA_1 .. LCA_h] W_O
    X_f        <- FFN(M-LCA(X_f)) + M-LCA(X_f)                                   (eq. 9)

Complexity for h x w tokens of width C and h_l x w_l windows (multiply-adds):

    Omega(M-GCA) = 4 h w C^2 + 2 (h w)^2 C                                       (eq. 10)
    Omega(M-LCA) = 4 h w C^2 + 2 h_l w_l h w C                                   (eq. 11)

``window=None`` gives the global cross-attention of eq. 10 with the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.befunet.swin import (
    Mlp,
    pad_to_multiple,
    window_attention,
    window_attention_mask,
    window_partition,
    window_reverse,
)


def cross_attention_macs(h: int, w: int, dim: int, window: int | None) -> int:
    """Multiply-adds of multi-head cross-attention on h x w tokens: eq. 11 for a window,
    eq. 10 (global) for ``window=None``. Exact when h, w are multiples of the window."""
    n = h * w
    keys = n if window is None else window * window
    return 4 * n * dim * dim + 2 * keys * n * dim


class LocalCrossAttention(nn.Module):
    """Multi-head cross-attention of edge queries on body keys/values inside local windows."""

    def __init__(self, dim: int, num_heads: int, window: int | None = 7, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LCAF width {dim} is not divisible by {num_heads} heads")
        if window is not None and window < 1:
            raise ValueError("LCAF window must be >= 1 (or None for global cross-attention)")
        self.dim, self.num_heads, self.window = dim, num_heads, window
        self.q = nn.Linear(dim, dim, bias=qkv_bias)  # W_Q on edge features
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # W_K, W_V on body features
        self.proj = nn.Linear(dim, dim)  # W_O
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}

    def forward(self, edge: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """edge, body: [B, H, W, C] (channels-last, same grid) -> [B, H, W, C]."""
        b, h, w, c = body.shape
        if self.window is None:
            # one window over the whole map: global cross-attention (eq. 10)
            hp, wp, ws = h, w, 0
            q_win, kv_win, mask = edge.reshape(b, 1, h * w, c), body.reshape(b, 1, h * w, c), None
        else:
            ws = min(self.window, max(h, w))
            eq, bk = pad_to_multiple(edge, ws), pad_to_multiple(body, ws)
            hp, wp = eq.shape[1:3]
            q_win, kv_win = window_partition(eq, ws), window_partition(bk, ws)
            key = (h, w, ws, body.device)
            if key not in self._mask_cache:
                # padded keys are masked out (no shift here)
                self._mask_cache[key] = window_attention_mask(h, w, ws, 0, body.device)
            mask = self._mask_cache[key]
        nw, n = q_win.shape[1], q_win.shape[2]
        d = c // self.num_heads
        q = self.q(q_win).view(b, nw, n, self.num_heads, d).transpose(2, 3)
        k, v = self.kv(kv_win).view(b, nw, n, 2, self.num_heads, d).permute(3, 0, 1, 4, 2, 5).unbind(0)
        out = window_attention(q, k, v, None if mask is None else mask[None, :, None])
        out = self.proj(out.transpose(2, 3).reshape(b, nw, n, c))
        if self.window is None:
            out = out.view(b, hp, wp, c)
        else:
            out = window_reverse(out, ws, hp, wp)
        return out[:, :h, :w]


class LCAF(nn.Module):
    """One LCAF transformer block at a level where edge and body features meet (eq. 9).

    ``X_f`` entering the block is the sum of the two modalities (the official code's whole
    fusion); the multi-head local cross-attention (pre-normed queries from the edge branch,
    keys/values from the body branch) and an FFN are added on top, each with a residual.
    """

    def __init__(self, dim: int, num_heads: int, window: int | None = 7, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm_edge = nn.LayerNorm(dim)
        self.norm_body = nn.LayerNorm(dim)
        self.attn = LocalCrossAttention(dim, num_heads, window)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, edge: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """edge, body: [B, H, W, C] -> fused [B, H, W, C]."""
        x = body + edge + self.attn(self.norm_edge(edge), self.norm_body(body))  # M-LCA
        return x + self.ffn(self.norm_ffn(x))  # eq. 9
