"""Whole-image, sliding-window and overlap-tile inference in 2-D and 3-D, with mirroring
test-time augmentation.

``predict_proba`` is the one entry point used by ``evaluate`` and ``predict``. It takes
images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]``; 2-D and 3-D share every code path:

- whole image (``window=None``): mirror-pad every spatial axis to the model's
  ``input_multiple``, one forward pass, crop back;
- sliding window (``window=(h, w)`` or ``(d, h, w)``): windows with the given ``overlap``
  ratio, batched, blended with a Gaussian importance map (sigma = window / 8 per axis, as
  in nnU-Net, Isensee et al. 2021, Nat. Methods 18:203) or uniformly. Probabilities are
  accumulated in float32 on ``device``; the input stays where it is and only batches of
  windows travel to the model's device, so a volume (and its accumulator) may live in CPU
  memory while the model runs on an accelerator;
- overlap-tile (models with ``output_margin > 0``, the valid-convolution U-Net,
  Ronneberger et al. 2015, Fig. 2): the image is mirror-padded by the margin and cut
  into input tiles whose valid outputs tile the image exactly, so the result does not
  depend on the tile size; ``window`` then gives the output tile size.

Test-time augmentation (``tta``) averages the probabilities over mirrorings: ``True``
takes all ``2**n`` combinations of flips of the ``n`` spatial axes (4 in 2-D, 8 in 3-D),
a sequence of spatial axes (0 = first spatial axis) the combinations of those only. In
sliding-window mode each window is mirrored (as nnU-Net does), so one accumulator serves
all flips; the other modes mirror the whole image. ``predict_volume`` applies a 2-D model
slice by slice to a 3-D volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from types import EllipsisType

import torch
import torch.nn.functional as F

from medseg.models.base import format_input

BLENDS = ("gaussian", "constant")
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # mirror_flips(2) for 2-D
# An accumulator (probabilities + weights) may take at most this share of the accelerator's free
# memory when ``device`` is not given; beyond it the probabilities are accumulated in CPU memory.
ACCUMULATOR_MEMORY_SHARE = 0.5


def logits_to_proba(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Sigmoid for one output channel (binary) or for every channel (``multilabel``: one
    independent region per channel), softmax over channels otherwise."""
    if multilabel or logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def mirror_flips(n_spatial: int, axes: Sequence[int] | None = None) -> tuple[tuple[int, ...], ...]:
    """Every combination of flips of the given spatial ``axes`` (default: all ``n_spatial``),
    as tuples of negative tensor dims, the identity first; ``mirror_flips(2) == TTA_FLIPS``."""
    axes = range(n_spatial) if axes is None else axes
    dims = sorted({int(a) - n_spatial for a in axes})
    if any(d < -n_spatial or d >= 0 for d in dims):
        raise ValueError(f"mirroring axes must be spatial axes 0..{n_spatial - 1}, got {list(axes)}")
    dims.reverse()  # bit j of the mask flips the j-th dim from the end
    return tuple(
        tuple(sorted(d for j, d in enumerate(dims) if mask >> j & 1)) for mask in range(2 ** len(dims))
    )


def _mirror_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a mirror (reflect, edge not repeated) padding of any width, even wider than ``n``."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def mirror_pad_nd(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror-pad the last ``len(pads)`` dims, ``pads[i] = (before, after)`` for the i-th of them,
    by any amounts (``F.pad`` reflect needs pad < size and a batch of 1-3-D images)."""
    n = len(pads)
    if not any(b or a for b, a in pads):
        return x
    sizes = x.shape[x.ndim - n :]
    if x.ndim == n + 2 and n <= 3 and all(b < s and a < s for (b, a), s in zip(pads, sizes)):
        return F.pad(x, [p for b, a in reversed(pads) for p in (b, a)], mode="reflect")
    for axis, ((before, after), size) in enumerate(zip(pads, sizes)):
        if before or after:
            x = x.index_select(x.ndim - n + axis, _mirror_index(size, before, after, x.device))
    return x


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror-pad the last two dimensions by any amounts (``F.pad`` reflect needs pad < size)."""
    return mirror_pad_nd(x, ((top, bottom), (left, right)))


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def gaussian_importance(size: Sequence[int], sigma_scale: float = 0.125, device=None) -> torch.Tensor:
    """Separable Gaussian weight map of shape ``size`` (any number of axes), sigma =
    ``sigma_scale * size`` per axis, centred at ``(size - 1) / 2``. Products of the 1-D
    Gaussians ``exp(-x**2 / (2 sigma**2))`` below 1e-3 are raised to 1e-3, so that every voxel
    is weighted (the window corners still count a little; MONAI's ``compute_importance_map``
    rule, so blends agree with its ``mode="gaussian"`` for every window size); the map is
    then scaled to peak 1 (nnU-Net), which does not change a blend."""
    w: torch.Tensor | None = None
    for n in size:
        c = (n - 1) / 2
        t = torch.arange(n, dtype=torch.float32, device=device)
        axis = torch.exp(-0.5 * ((t - c) / max(sigma_scale * n, 1e-6)) ** 2)
        w = axis if w is None else w[..., None] * axis
    assert w is not None, "size must have at least one axis"
    w = w.clamp_min(max(float(w.min()), 1e-3))  # keep every voxel weighted
    return w / w.max()


def _starts(length: int, window: int, step: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, step))
    starts.append(length - window)
    return starts


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def accumulator_device(model_device: torch.device, nbytes: int) -> torch.device:
    """Where to accumulate ``nbytes`` of probabilities when the caller did not say: the model's
    device, unless it is an accelerator whose free memory would be more than
    :data:`ACCUMULATOR_MEMORY_SHARE` used by them (then the CPU)."""
    if model_device.type != "cuda":
        return model_device
    free, _total = torch.cuda.mem_get_info(model_device)
    return model_device if nbytes <= ACCUMULATOR_MEMORY_SHARE * free else torch.device("cpu")


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _box(corner: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + s) for c, s in zip(corner, size))


def _crop(size: Sequence[int]) -> tuple[EllipsisType | slice, ...]:
    """Index of the first ``size`` voxels of the trailing axes (undoes padding at the end)."""
    return (..., *(slice(0, s) for s in size))


def _forward(model, tiles: torch.Tensor, model_device: torch.device, multilabel: bool) -> torch.Tensor:
    return logits_to_proba(model(format_input(tiles.to(model_device), model)).float(), multilabel)


def _whole(model, x, acc_device, multilabel: bool) -> torch.Tensor:
    spatial = x.shape[2:]
    m = int(getattr(model, "input_multiple", 1))
    xp = mirror_pad_nd(x, [(0, _round_up(n, m) - n) for n in spatial])
    proba = logits_to_proba(model(format_input(xp, model)).float(), multilabel)
    return proba[_crop(spatial)].to(acc_device)


def _mirrored_forward(model, tiles: torch.Tensor, model_device, flips, multilabel: bool) -> torch.Tensor:
    """Probabilities of a batch of windows, averaged over the mirrorings ``flips``."""
    tiles = tiles.to(model_device)
    total: torch.Tensor | None = None
    for dims in flips:
        p = _forward(model, tiles.flip(dims) if dims else tiles, model_device, multilabel)
        p = p.flip(dims) if dims else p
        total = p if total is None else total.add_(p)
    assert total is not None
    return total / len(flips) if len(flips) > 1 else total


def _blend_weight(blend: str, window: Sequence[int], device: torch.device) -> torch.Tensor:
    if blend == "gaussian":
        return gaussian_importance(window, device=device)
    return torch.ones(tuple(window), device=device)


def _accumulators(shape, window, corners, blend, device):
    """Zeroed probability sums ``shape`` = [B, K, *padded], the window weight, and the sum of
    the weights of all windows at every voxel (the same for every image of the batch)."""
    weight = _blend_weight(blend, window, device)
    norm = torch.zeros(tuple(shape[2:]), device=device)
    for corner in corners:
        norm[_box(corner, window)] += weight
    return torch.zeros(tuple(shape), device=device), weight, norm


def _sliding(model, x, window, overlap, blend, batch_size, acc_device, flips, multilabel) -> torch.Tensor:
    """Sliding-window probabilities; ``x`` stays on its device, windows go to the model."""
    b, spatial = x.shape[0], tuple(x.shape[2:])
    m = int(getattr(model, "input_multiple", 1))
    # the window is rounded up to the model's multiple and not larger than the (padded) image
    win = tuple(min(_round_up(int(s), m), _round_up(n, m)) for s, n in zip(window, spatial))
    xp = mirror_pad_nd(x, [(0, max(w - n, 0)) for w, n in zip(win, spatial)])
    padded = tuple(xp.shape[2:])
    steps = [max(1, int(w * (1 - overlap))) for w in win]
    corners = list(itertools.product(*(_starts(p, w, s) for p, w, s in zip(padded, win, steps))))
    model_device = _model_device(model)
    acc: torch.Tensor | None = None
    weight = norm = torch.empty(0)
    for chunk in _batched([(i, c) for i in range(b) for c in corners], batch_size):
        tiles = torch.stack([xp[(i, slice(None), *_box(c, win))] for i, c in chunk])
        proba = _mirrored_forward(model, tiles, model_device, flips, multilabel)
        if acc is None:
            shape = (b, proba.shape[1], *padded)
            nbytes = 4 * (math.prod(shape) + math.prod(padded))
            device = acc_device or accumulator_device(model_device, nbytes)
            acc, weight, norm = _accumulators(shape, win, corners, blend, device)
        proba = proba.to(acc.device)
        for p, (i, c) in zip(proba, chunk):
            acc[(i, slice(None), *_box(c, win))].addcmul_(p, weight)
    assert acc is not None
    return acc.div_(norm)[_crop(spatial)]


def _overlap_tile(model, x, window, batch_size, acc_device, multilabel) -> torch.Tensor:
    """Overlap-tile strategy for a valid-convolution model (output smaller than input by
    ``output_margin`` per side) with mirrored context. Tiles start at multiples of the
    model's ``tile_alignment`` (2**depth for U-Net: the pooling grid), so every tile
    computes exactly what one huge tile would, whatever the tile size; neighbouring
    output tiles overlap by less than the alignment and agree there."""
    b, spatial = x.shape[0], tuple(x.shape[2:])
    margin = int(model.output_margin)
    align = int(getattr(model, "tile_alignment", 1))
    wanted = spatial if window is None else tuple(min(int(s), n) for s, n in zip(window, spatial))
    tin = [model.valid_input_size(max(int(s), align)) for s in wanted]
    tout = [int(model.output_size(s)) for s in tin]
    steps = [t // align * align for t in tout]
    starts = [
        [k * st for k in range(1 + math.ceil(max(n - t, 0) / st))] for n, t, st in zip(spatial, tout, steps)
    ]
    extent = [s[-1] + t for s, t in zip(starts, tout)]
    xp = mirror_pad_nd(x, [(margin, e - n + margin) for e, n in zip(extent, spatial)])
    out: torch.Tensor | None = None
    jobs = [(i, c) for i in range(b) for c in itertools.product(*starts)]
    for chunk in _batched(jobs, batch_size):
        tiles = torch.stack([xp[(i, slice(None), *_box(c, tin))] for i, c in chunk])
        proba = logits_to_proba(model(format_input(tiles, model)).float(), multilabel).to(acc_device)
        if out is None:
            out = torch.zeros(b, proba.shape[1], *extent, device=acc_device)
        for p, (i, c) in zip(proba, chunk):
            out[(i, slice(None), *_box(c, tout))] = p
    assert out is not None
    return out[_crop(spatial)]


def _check_arguments(image: torch.Tensor, blend: str, overlap: float, batch_size: int) -> None:
    if image.ndim not in (4, 5):
        raise ValueError(
            f"predict_proba expects images [B, C, H, W] or volumes [B, C, D, H, W], got shape {tuple(image.shape)}"
        )
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got '{blend}'")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")


def _window(window: int | Sequence[int] | None, n: int) -> tuple[int, ...] | None:
    if window is None:
        return None
    sizes = (int(window),) * n if isinstance(window, int) else tuple(int(s) for s in window)
    if len(sizes) != n or min(sizes) < 1:
        raise ValueError(f"window must be {n} positive sizes (one per spatial axis), got {sizes}")
    return sizes


def _flips(tta: bool | Sequence[int], n: int) -> tuple[tuple[int, ...], ...]:
    if isinstance(tta, bool):
        return mirror_flips(n) if tta else ((),)
    return mirror_flips(n, tta)


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    window: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    tta: bool | Sequence[int] = False,
    device: torch.device | str | None = None,
    multilabel: bool = False,
) -> torch.Tensor:
    """Class probabilities ``[B, K, *spatial]`` (float32) for images ``[B, C, H, W]`` or
    volumes ``[B, C, D, H, W]`` of any size.

    ``window``: one size per spatial axis (an int for all), None for a single forward pass.
    ``tta``: True mirrors over all spatial axes (``2**n`` passes), a sequence of spatial
    axes over those only. The model runs on its own device; ``device`` is where the
    probabilities are accumulated and returned (default: the model's device, or the CPU in
    sliding-window mode when the accumulator would not fit in the accelerator's free memory,
    see :func:`accumulator_device`). In sliding-window mode the image is not copied to the
    model's device, only batches of windows are. The model's train/eval mode is left as it
    is: call ``model.eval()`` first. ``multilabel``: a sigmoid per channel (region-based
    models) instead of the softmax over channels.
    """
    _check_arguments(image, blend, overlap, batch_size)
    n = image.ndim - 2
    window = _window(window, n)
    flips = _flips(tta, n)
    requested = torch.device(device) if device is not None else None
    if window is not None and not getattr(model, "output_margin", 0):
        return _sliding(model, image, window, overlap, blend, batch_size, requested, flips, multilabel)
    model_device = _model_device(model)
    acc_device = requested or model_device
    x = image.to(model_device)
    total: torch.Tensor | None = None
    for dims in flips:
        xf = x.flip(dims) if dims else x
        if getattr(model, "output_margin", 0):
            p = _overlap_tile(model, xf, window, batch_size, acc_device, multilabel)
        else:
            p = _whole(model, xf, acc_device, multilabel)
        p = p.flip(dims) if dims else p
        total = p if total is None else total + p
    assert total is not None
    return total / len(flips)


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module, volume: torch.Tensor, *, axis: int = 0, slice_batch: int = 8, **kwargs
) -> torch.Tensor:
    """Slice-by-slice probabilities of a 2-D model for a volume ``[C, D, H, W]`` (or ``[D, H, W]``
    with one channel): 2-D slices along spatial ``axis`` (0 = D) go through :func:`predict_proba`
    ``slice_batch`` at a time; returns ``[K, D, H, W]``. (A 3-D model takes the volume whole:
    ``predict_proba(model, volume[None])``.)"""
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
