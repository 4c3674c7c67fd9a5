"""Double-level fusion (DLF; BEFUnet paper §3.2.1, eq. 12-13).

DLF fuses the shallowest fused level P^s (H/4 x W/4 x C, precise localisation) with the
deepest one P^l (H/32 x W/32 x 8C, semantics); the middle levels are left out to save
compute, as the paper chooses.

1. Class tokens (eq. 12): CLS^s = GAP(Norm(P^s)), CLS^l = GAP(Norm(P^l)).
2. Each level, with its class token prepended and a learnable position embedding added,
   goes through its own transformer encoder: S blocks for P^s, L blocks for P^l (global
   self-attention).
3. Class-token exchange and cross-attention (eq. 13), for the small level:
       y^s = f^s(CLS^s) + MCA(LN([f^s(CLS^s) || P^l]))
       Z^s = [P^s || g^s(y^s)]
   f^s projects CLS^s to the other level's width, MCA queries with the class token only
   (linear in the number of tokens), g^s projects back. Symmetrically for the large level.

Here P^s, P^l, CLS^s, CLS^l in step 3 are the *encoders' outputs*. The decoder is
convolutional, so Z's extra token is read out by adding g(y) to every token of its level
(a learned global context from the other level); the official code instead drops the
class tokens before decoding, which discards the cross-level fusion (see docs/befunet.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.befunet.swin import Mlp


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention; in fp32 when training on CPU under autocast.

    PyTorch's CPU flash-attention backward is slower in bf16 than in fp32 at the DLF's shapes
    (3,137 tokens, head width 16: 175-196 ms against 115-122 ms per step, forward 35 against
    45 ms; docs/bench/befunet.md), so a bf16 training step runs these products in fp32. Inference
    (no gradient) keeps bf16, whose forward is the faster one.
    """
    if q.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return F.scaled_dot_product_attention(q, k, v)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"DLF width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (
            self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        )
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClassTokenCrossAttention(nn.Module):
    """MCA of eq. 13: the first token queries all tokens (keys/values), so the cost is linear
    in the number of tokens. Returns the updated class token [B, 1, C]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"DLF width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x[:, :1]).view(b, 1, self.num_heads, d).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(b, 1, c))


def _projection(src: int, dst: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(src), nn.GELU(), nn.Linear(src, dst))


class DLF(nn.Module):
    """Double-level fusion of the shallowest (index 0) and deepest (index 1) levels.

    ``grids``: token grids (h, w) of the two levels at the reference input size, for the
    learnable position embeddings (interpolated bicubically for other sizes).
    """

    def __init__(
        self,
        dims: tuple[int, int],
        grids: tuple[tuple[int, int], tuple[int, int]],
        depths: tuple[int, int] = (1, 2),
        num_heads: tuple[int, int] = (6, 12),
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.dims, self.grids = tuple(dims), tuple(tuple(g) for g in grids)
        self.cls_norm = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.pos_embed = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1 + g[0] * g[1], d)) for d, g in zip(dims, self.grids)
        )
        for p in self.pos_embed:
            nn.init.trunc_normal_(p, std=0.02)
        self.encoders = nn.ModuleList(
            nn.Sequential(*[EncoderBlock(d, h, mlp_ratio) for _ in range(n)])
            for d, h, n in zip(dims, num_heads, depths)
        )
        # level i's class token goes to level j = 1 - i: f^i: d_i -> d_j, MCA in d_j, g^i: d_j -> d_i
        self.to_other = nn.ModuleList(_projection(dims[i], dims[1 - i]) for i in range(2))
        self.cross_norm = nn.ModuleList(nn.LayerNorm(dims[1 - i]) for i in range(2))
        self.cross = nn.ModuleList(ClassTokenCrossAttention(dims[1 - i], num_heads[1 - i]) for i in range(2))
        self.back = nn.ModuleList(_projection(dims[1 - i], dims[i]) for i in range(2))
        self.out_norm = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    def position_embedding(self, i: int, h: int, w: int) -> torch.Tensor:
        pe = self.pos_embed[i]
        gh, gw = self.grids[i]
        if (h, w) == (gh, gw):
            return pe
        grid = pe[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pe[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def encode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """[B, h, w, C] level -> encoder output [B, 1 + h*w, C] (class token first)."""
        b, h, w, c = p.shape
        tokens = p.reshape(b, h * w, c)
        cls = self.cls_norm[i](tokens).mean(dim=1, keepdim=True)  # eq. 12: GAP(Norm(P))
        seq = torch.cat([cls, tokens], dim=1) + self.position_embedding(i, h, w)
        return self.encoders[i](seq)

    def forward(self, p_small: torch.Tensor, p_large: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p_small [B, H, W, C0], p_large [B, h, w, C1] (channels-last) -> fused maps, same shapes."""
        levels = (p_small, p_large)
        encoded = [self.encode(i, p) for i, p in enumerate(levels)]
        outs = []
        for i in range(2):
            j = 1 - i
            cls = self.to_other[i](encoded[i][:, :1])  # f^i(CLS^i), width d_j
            seq = torch.cat([cls, encoded[j][:, 1:]], dim=1)  # exchange: [f(CLS^i) || P^j]
            y = cls + self.cross[i](self.cross_norm[i](seq))  # eq. 13, first line
            z = encoded[i][:, 1:] + self.back[i](y)  # Z^i read out on the token grid
            b, h, w, c = levels[i].shape
            outs.append(self.out_norm[i](z).view(b, h, w, c))
        return outs[0], outs[1]
