"""Whole-image, sliding-window and overlap-tile inference, with test-time augmentation.

``predict_proba`` is the one entry point used by ``evaluate`` and ``predict``:

- whole image (``window=None``): mirror-pad to the model's ``input_multiple``, one
  forward pass, crop back;
- sliding window (``window=(h, w)``): windows with the given ``overlap`` ratio,
  batched, blended with a Gaussian importance map (sigma = window / 8, as in nnU-Net,
  Isensee et al. 2021) or uniformly, accumulated on ``device``;
- overlap-tile (models with ``output_margin > 0``, the valid-convolution U-Net,
  Ronneberger et al. 2015, Fig. 2): the image is mirror-padded by the margin and cut
  into input tiles whose valid outputs tile the image exactly, so the result does not
  depend on the tile size; ``window`` then gives the output tile size.

Test-time augmentation (``tta=True``) averages the probabilities over the identity
and the horizontal, vertical and double flips. ``predict_volume`` applies any of
this slice by slice to a 3-D volume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from medseg.models.base import format_input

BLENDS = ("gaussian", "constant")
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def logits_to_proba(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for one output channel (binary), softmax over channels otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def _mirror_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a mirror (reflect, edge not repeated) padding of any width, even wider than ``n``."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror-pad the last two dimensions by any amounts (``F.pad`` reflect needs pad < size)."""
    h, w = x.shape[-2:]
    if top < h and bottom < h and left < w and right < w:
        return F.pad(x, (left, right, top, bottom), mode="reflect") if (top or bottom or left or right) else x
    rows = _mirror_index(h, top, bottom, x.device)
    cols = _mirror_index(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def gaussian_importance(size: tuple[int, int], sigma_scale: float = 0.125, device=None) -> torch.Tensor:
    """Separable Gaussian weight map ``[h, w]`` with its peak 1 at the centre and no zeros."""
    axes = []
    for n in size:
        c = (n - 1) / 2
        t = torch.arange(n, dtype=torch.float32, device=device)
        axes.append(torch.exp(-0.5 * ((t - c) / max(sigma_scale * n, 1e-6)) ** 2))
    w = axes[0][:, None] * axes[1][None, :]
    w = w / w.max()
    return w.clamp_min(max(float(w[w > 0].min()), 1e-3))  # keep every pixel weighted


def _starts(length: int, window: int, step: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, step))
    starts.append(length - window)
    return starts


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _whole(model, x, acc_device) -> torch.Tensor:
    h, w = x.shape[-2:]
    m = int(getattr(model, "input_multiple", 1))
    xp = mirror_pad(x, 0, _round_up(h, m) - h, 0, _round_up(w, m) - w)
    return logits_to_proba(model(format_input(xp, model)).float())[..., :h, :w].to(acc_device)


def _sliding(model, x, window, overlap, blend, batch_size, acc_device) -> torch.Tensor:
    b, _, h, w = x.shape
    m = int(getattr(model, "input_multiple", 1))
    # the window is rounded up to the model's multiple and not larger than the (padded) image
    win = tuple(min(_round_up(int(s), m), _round_up(n, m)) for s, n in zip(window, (h, w)))
    xp = mirror_pad(x, 0, max(win[0] - h, 0), 0, max(win[1] - w, 0))
    hp, wp = xp.shape[-2:]
    steps = [max(1, int(s * (1 - overlap))) for s in win]
    boxes = [(y, xx) for y in _starts(hp, win[0], steps[0]) for xx in _starts(wp, win[1], steps[1])]
    weight = (
        gaussian_importance(win, device=acc_device)
        if blend == "gaussian"
        else torch.ones(win, device=acc_device)
    )
    acc: torch.Tensor | None = None
    norm = torch.zeros(hp, wp, device=acc_device)
    for y, xx in boxes:
        norm[y : y + win[0], xx : xx + win[1]] += weight
    jobs = [(i, y, xx) for i in range(b) for y, xx in boxes]
    for chunk in _batched(jobs, batch_size):
        tiles = torch.stack([xp[i, :, y : y + win[0], xx : xx + win[1]] for i, y, xx in chunk])
        proba = logits_to_proba(model(format_input(tiles, model)).float()).to(acc_device)
        if acc is None:
            acc = torch.zeros(b, proba.shape[1], hp, wp, device=acc_device)
        for p, (i, y, xx) in zip(proba, chunk):
            acc[i, :, y : y + win[0], xx : xx + win[1]] += p * weight
    assert acc is not None
    return (acc / norm)[..., :h, :w]


def _overlap_tile(model, x, window, batch_size, acc_device) -> torch.Tensor:
    """Overlap-tile strategy for a valid-convolution model (output smaller than input by
    ``output_margin`` per side) with mirrored context. Tiles start at multiples of the
    model's ``tile_alignment`` (2**depth for U-Net: the pooling grid), so every tile
    computes exactly what one huge tile would, whatever the tile size; neighbouring
    output tiles overlap by less than the alignment and agree there."""
    b, _, h, w = x.shape
    margin = int(model.output_margin)
    align = int(getattr(model, "tile_alignment", 1))
    wanted = (h, w) if window is None else tuple(min(int(s), n) for s, n in zip(window, (h, w)))
    tin = [model.valid_input_size(max(int(s), align)) for s in wanted]
    tout = [int(model.output_size(s)) for s in tin]
    steps = [t // align * align for t in tout]
    starts = [
        [k * st for k in range(1 + math.ceil(max(n - t, 0) / st))] for n, t, st in zip((h, w), tout, steps)
    ]
    xp = mirror_pad(
        x, margin, starts[0][-1] + tout[0] - h + margin, margin, starts[1][-1] + tout[1] - w + margin
    )
    out: torch.Tensor | None = None
    jobs = [(i, y, xx) for i in range(b) for y in starts[0] for xx in starts[1]]
    for chunk in _batched(jobs, batch_size):
        tiles = torch.stack([xp[i, :, y : y + tin[0], xx : xx + tin[1]] for i, y, xx in chunk])
        proba = logits_to_proba(model(format_input(tiles, model)).float()).to(acc_device)
        if out is None:
            out = torch.zeros(
                b, proba.shape[1], starts[0][-1] + tout[0], starts[1][-1] + tout[1], device=acc_device
            )
        for p, (i, y, xx) in zip(proba, chunk):
            out[i, :, y : y + tout[0], xx : xx + tout[1]] = p
    assert out is not None
    return out[..., :h, :w]


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    window: tuple[int, int] | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class probabilities ``[B, K, H, W]`` (float32) for images ``[B, C, H, W]`` of any size.

    The model runs on its own device (the image is moved there); ``device`` is where the
    probabilities are accumulated and returned (default: the model's device; ``"cpu"``
    saves accelerator memory on large images). The model's
    train/eval mode is left as it is: call ``model.eval()`` first.
    """
    if image.ndim != 4:
        raise ValueError(f"predict_proba expects images [B, C, H, W], got shape {tuple(image.shape)}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got '{blend}'")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if window is not None:
        window = (int(window), int(window)) if isinstance(window, int) else tuple(int(s) for s in window)
        if len(window) != 2 or min(window) < 1:
            raise ValueError(f"window must be two positive sizes (h, w), got {window}")
    model_device = _model_device(model)
    acc_device = torch.device(device) if device is not None else model_device
    x = image.to(model_device)
    flips: Sequence[tuple[int, ...]] = TTA_FLIPS if tta else ((),)
    total: torch.Tensor | None = None
    for dims in flips:
        xf = x.flip(dims) if dims else x
        if getattr(model, "output_margin", 0):
            p = _overlap_tile(model, xf, window, batch_size, acc_device)
        elif window is None:
            p = _whole(model, xf, acc_device)
        else:
            p = _sliding(model, xf, window, overlap, blend, batch_size, acc_device)
        p = p.flip(dims) if dims else p
        total = p if total is None else total + p
    assert total is not None
    return total / len(flips)


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module, volume: torch.Tensor, *, axis: int = 0, slice_batch: int = 8, **kwargs
) -> torch.Tensor:
    """Slice-by-slice probabilities for a volume ``[C, D, H, W]`` (or ``[D, H, W]`` with one
    channel): 2-D slices along spatial ``axis`` (0 = D) go through :func:`predict_proba`
    ``slice_batch`` at a time; returns ``[K, D, H, W]``."""
    if volume.ndim == 3:
        volume = volume[None]
    if volume.ndim != 4:
        raise ValueError(f"predict_volume expects [C, D, H, W] or [D, H, W], got {tuple(volume.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError("axis must be 0, 1 or 2 (a spatial axis of [C, D, H, W])")
    slices = volume.movedim(axis + 1, 0)  # [S, C, a, b]
    outs = [
        predict_proba(model, slices[i : i + slice_batch], **kwargs)
        for i in range(0, slices.shape[0], slice_batch)
    ]
    return torch.cat(outs, dim=0).movedim(0, axis + 1)  # [K, ...] with the slice axis back in place
