"""Swin Transformer body encoder (Liu et al., ICCV 2021; BEFUnet paper §3.1.2, eq. 3-6).

Patch embedding (P x P patches -> C), then 4 stages of Swin blocks alternating W-MSA
and SW-MSA (cyclic shift + attention mask), each with a relative position bias, and
patch merging (2x2 -> 2C) between stages: H/4 x W/4 x C ... H/32 x W/32 x 8C.

Features stay channels-last ``[B, H, W, C]``. Any H, W works: a block whose map is not
a multiple of its window pads it and masks the padded keys; a map no larger than the
window is attended as one window without shift (as the official Swin code does).

Parameter names follow the official Swin / timm checkpoints (``patch_embed.proj``,
``layers.{i}.blocks.{j}.attn.qkv``, ``layers.{i}.downsample.reduction`` ...), so
``load_swin_weights`` reads an ImageNet ``swin_tiny_patch4_window7_224`` file directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from medseg.errors import CheckpointError


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] (H, W multiples of ws) -> [B, nW, ws*ws, C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """[B, nW, ws*ws, C] -> [B, H, W, C]."""
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def pad_to_multiple(x: torch.Tensor, ws: int) -> torch.Tensor:
    """Zero-pad a channels-last map at the bottom/right to multiples of ``ws``."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % ws, (-w) % ws
    return F.pad(x, (0, 0, 0, pw, 0, ph)) if ph or pw else x


def window_attention_mask(
    h: int, w: int, ws: int, shift: int, device: torch.device | None = None
) -> torch.Tensor | None:
    """Which keys each query may attend to, per window: bool [nW, ws*ws, ws*ws] (True = allowed)
    for a map of h x w valid tokens padded to multiples of ws and rolled by -shift.

    Two tokens of a (shifted) window may attend to each other only if they come from the
    same region of the un-rolled map (SW-MSA mask, Swin §3.2); padded tokens are never
    attended by valid ones. ``None`` when nothing is masked.
    """
    hp, wp = h + (-h) % ws, w + (-w) % ws
    if shift == 0 and hp == h and wp == w:
        return None

    def labels(n: int, npad: int) -> torch.Tensor:
        lab = torch.zeros(npad, dtype=torch.long)
        if shift:
            lab[npad - ws : npad - shift] = 1
            lab[npad - shift :] = 2
        # padded positions, located in the rolled frame: rolled p comes from (p + shift) mod npad
        orig = (torch.arange(npad) + shift) % npad
        lab[orig >= n] = 3
        return lab

    lab = labels(h, hp)[:, None] * 4 + labels(w, wp)[None, :]
    pad = (labels(h, hp)[:, None] == 3) | (labels(w, wp)[None, :] == 3)
    lab = torch.where(pad, torch.full_like(lab, -1), lab)
    win = window_partition(lab[None, :, :, None], ws)[0, :, :, 0]  # [nW, N]
    allowed = win[:, :, None] == win[:, None, :]
    return allowed.to(device) if device is not None else allowed


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention inside windows: q, k, v [B, nW, heads, N, d] -> [B, nW, heads, N, d].

    ``mask``: an additive float bias (``-inf`` where a key is not allowed) or a bool mask (True =
    allowed), 5-D and broadcastable to [B, nW, heads, N, N]; or None. Every query must be allowed at least
    one key (true of the SW-MSA and padding masks: a token always sees itself).

    Batch and windows are merged into one dimension, so PyTorch's fused (flash) CPU kernel applies:
    on 5-D inputs, or with a mask that needs a gradient, ``scaled_dot_product_attention`` falls back
    to its unfused path, which measured 3x slower for Swin stage 1 (128 windows of 49 tokens,
    docs/bench/befunet.md). A bias that needs a gradient (the relative position bias in training)
    goes through the explicit product instead, faster than that fallback.
    """
    b, nw, h, n, d = q.shape
    if mask is not None and mask.requires_grad and torch.is_grad_enabled():
        scores = (q * d**-0.5) @ k.transpose(-2, -1) + mask
        return scores.softmax(dim=-1).to(v.dtype) @ v
    q4, k4, v4 = (t.reshape(b * nw, h, n, d) for t in (q, k, v))
    if mask is not None:
        mb, mw, mh = mask.shape[:3]
        if mb == mw == 1:
            mask = mask.reshape(1, mh, n, n)  # the same for every window: broadcast
        else:
            mask = mask.expand(b, nw, mh, n, n).reshape(b * nw, mh, n, n)
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask)
    return out.view(b, nw, h, n, d)


def relative_position_index(ws: int, table_window: int) -> torch.Tensor:
    """Index [ws*ws, ws*ws] into a (2*table_window-1)**2 bias table for a ws x ws window
    (ws <= table_window: relative offsets keep their table entries)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
    return rel[0] * (2 * table_window - 1) + rel[1]


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (W-MSA / SW-MSA)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin width {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._index_cache: dict[int, torch.Tensor] = {}

    def bias(self, ws: int) -> torch.Tensor:
        """Relative position bias [heads, N, N] for a ws x ws window."""
        idx = self._index_cache.get(ws)
        if idx is None or idx.device != self.relative_position_bias_table.device:
            idx = relative_position_index(ws, self.window_size).to(self.relative_position_bias_table.device)
            self._index_cache[ws] = idx
        n = ws * ws
        return self.relative_position_bias_table[idx.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, ws: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, nW, N, C] windows; mask: bool [nW, N, N] or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # [B, nW, heads, N, d]
        bias = self.bias(ws).to(q.dtype)[None, None]  # [1, 1, heads, N, N]
        if mask is not None:
            bias = bias.masked_fill(~mask[None, :, None], float("-inf"))
        out = window_attention(q, k, v, bias)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """LN -> (S)W-MSA -> residual -> LN -> MLP -> residual (paper eq. 3-4, or 5-6 when shifted)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shifted: bool,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size, self.shifted = window_size, shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}

    def window_and_shift(self, h: int, w: int) -> tuple[int, int]:
        if min(h, w) <= self.window_size:
            return min(h, w), 0
        return self.window_size, (self.window_size // 2 if self.shifted else 0)

    def mask(self, h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor | None:
        key = (h, w, ws, shift, device)
        if key not in self._mask_cache:
            self._mask_cache[key] = window_attention_mask(h, w, ws, shift, device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, shift = self.window_and_shift(h, w)
        y = pad_to_multiple(self.norm1(x), ws)
        hp, wp = y.shape[1:3]
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), ws, self.mask(h, w, ws, shift, x.device))
        y = window_reverse(y, ws, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> linear projection to C -> LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbouring patches concatenated (4C) -> LayerNorm -> linear to 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage: ``depth`` blocks alternating W-MSA / SW-MSA, then (except the last) patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: list[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, num_heads, window_size, shifted=j % 2 == 1, mlp_ratio=mlp_ratio, drop_path=drop_path[j]
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class SwinTransformer(nn.Module):
    """Hierarchical Swin encoder; ``forward`` returns the 4 stage outputs (before merging),
    channels-last. BEFUnet drives the stages itself to fuse edge features in between."""

    def __init__(
        self,
        in_channels: int = 3,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have one entry per stage")
        self.dims = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.dims[i],
                    depth,
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    rates[start : start + depth],
                    downsample=i < len(depths) - 1,
                )
            )
        self.apply(_init_weights)

    def stages(self) -> list[SwinStage]:
        """The stages, typed (``nn.ModuleList`` iteration yields plain modules)."""
        return [cast(SwinStage, layer) for layer in self.layers]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for layer in self.stages():
            x = layer.forward_blocks(x)
            outs.append(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return outs


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: safetensors, or a torch file loaded with ``weights_only=True``;
    unwraps the ``model`` / ``state_dict`` containers of official checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Swin weights file not found: {path}")
    try:
        state: object
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any reader failure with the file name
        raise CheckpointError(f"cannot read Swin weights from {path}: {err}") from err
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def load_swin_weights(swin: SwinTransformer, path: str | Path) -> dict[str, list[str]]:
    """Load ImageNet Swin weights (official or timm key names) into ``swin``.

    Classification parts (``head``, final ``norm``) and derived buffers are skipped; timm >= 0.9
    files (patch merging stored at the *start* of the next stage) are renamed; a patch
    embedding for another channel count is adapted (mean over RGB, repeated). Returns the
    ``missing`` and ``skipped`` key lists; raises ``CheckpointError`` on shape mismatches.
    """
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in read_state_dict(path).items()}
    if any(k.startswith("layers.1.downsample.") for k in state) and not any(
        k.startswith("layers.0.downsample.") for k in state
    ):
        renamed = {}
        for k, v in state.items():
            parts = k.split(".")
            if len(parts) > 2 and parts[0] == "layers" and parts[2] == "downsample":
                parts[1] = str(int(parts[1]) - 1)
            renamed[".".join(parts)] = v
        state = renamed
    own = swin.state_dict()
    load, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            skipped.append(k)
            continue
        if k == "patch_embed.proj.weight" and v.shape[1] != own[k].shape[1]:
            v = v.mean(dim=1, keepdim=True).repeat(1, own[k].shape[1], 1, 1) * (v.shape[1] / own[k].shape[1])
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"Swin weight '{k}' has shape {tuple(v.shape)} in {path}, "
                f"the model needs {tuple(own[k].shape)} (wrong size or window?)"
            )
        load[k] = v
    if not load:
        raise CheckpointError(f"{path} holds no Swin Transformer weights (no matching key names)")
    swin.load_state_dict(load, strict=False)
    return {"missing": sorted(set(own) - set(load)), "skipped": sorted(skipped)}
