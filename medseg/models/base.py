"""The contract every segmentation model keeps (see DESIGN.md, "Tensors")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class SegmentationModel(nn.Module):
    """Base class: ``forward(x) -> logits [B, K, H, W]`` at the input size.

    ``input_multiple``: H and W must be multiples of it (inference pads to it).
    ``forward_aux(x) -> (logits, aux)`` returns auxiliary outputs (a dict of named
    tensors or lists of tensors); models without any return an empty dict.
    ``preferred_memory_format``: the layout its weights and inputs run fastest in (see
    :func:`to_preferred_format`): channels_last, oneDNN's fast layout for convolutions, unless a
    model says otherwise (BEFUnet: its Swin tokens gain nothing from it).
    """

    input_multiple: int = 1
    preferred_memory_format: torch.memory_format = torch.channels_last

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.forward(x), {}

    def check_input(self, x: torch.Tensor) -> None:
        """Clear error for a wrong channel count or a size the model cannot take."""
        expected = getattr(self, "in_channels", None)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects [B, C, H, W], got shape {tuple(x.shape)}")
        if expected is not None and x.shape[1] != expected:
            raise ValueError(
                f"{type(self).__name__} was built for {expected} input channels, got {x.shape[1]}"
            )
        m = self.input_multiple
        if m > 1 and (x.shape[-2] % m or x.shape[-1] % m):
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by {m}, got {tuple(x.shape[-2:])}; "
                "use medseg.inference.predict (pads automatically)"
            )


_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def resolve_memory_format(model: nn.Module, setting: bool | str | None = "auto") -> torch.memory_format:
    """The memory format to run ``model`` in.

    ``setting``: ``"auto"`` (or None) takes the model's ``preferred_memory_format`` (contiguous
    for modules that do not declare one, e.g. a wrapper or a foreign model), ``True`` or
    ``"channels_last"`` forces channels_last, ``False`` or ``"contiguous"`` forces contiguous.
    Wrappers holding the model as ``.module`` (DDP) or ``.model`` (the trainer's AuxForward) are
    looked through.
    """
    if setting is None or setting == "auto":
        inner: nn.Module | None = model
        while inner is not None and not hasattr(inner, "preferred_memory_format"):
            inner = next(
                (
                    c
                    for c in (getattr(inner, "module", None), getattr(inner, "model", None))
                    if isinstance(c, nn.Module)
                ),
                None,
            )
        return getattr(inner, "preferred_memory_format", torch.contiguous_format)
    if isinstance(setting, bool):
        return torch.channels_last if setting else torch.contiguous_format
    if setting in _FORMATS:
        return _FORMATS[setting]
    raise ValueError(
        f"memory format setting must be 'auto', 'channels_last', 'contiguous' or a bool, got {setting!r}"
    )


# channels_last pays only from some input size on: it adds layout work per layer that small maps do
# not repay. Smallest image area (H x W pixels) from which channels_last was measured faster than
# NCHW, per model class (bench/speed.py --part format, docs/bench/speed.md; 2-core AVX-512 CPU,
# torch 2.13, batch 2, training and inference); classes not listed use the default.
# Measured at 64^2, 128^2, 256^2 only, so a threshold says "from 128^2 on". U-Net (plain convs and
# transposed-conv upsampling): channels_last faster at every size (1.05-1.4x), no entry.
CHANNELS_LAST_MIN_PIXELS: dict[str, int] = {
    # 64^2: NCHW 1.2x faster (train and inference); 128^2: split (train 1.14x channels_last,
    # inference 0.98x); 256^2: NCHW (0.94x / 0.83x here; the quiet-machine zoo run also had smp's
    # v3+ 1.02-1.05x faster in NCHW). So NCHW through 256^2; larger inputs were not measured.
    "DeepLabV3Plus": 256 * 256 + 1,
    # 64^2: NCHW faster (smp's NCHW U-Net beat medseg's channels_last one there); 128^2: NCHW
    # (training 0.98x smp in NCHW against 0.95x in channels_last, inference equal; 2 threads,
    # stop 22); 256^2: channels_last (training 1.06x against 0.98x, inference 1.40x against 1.05x)
    "UNetResNet": 128 * 128 + 1,
}
CHANNELS_LAST_MIN_PIXELS_DEFAULT = 0  # unmeasured classes: their preferred format at every size


def _inner_model(model: nn.Module) -> nn.Module:
    """``model`` without the wrappers (DDP ``.module``, AuxForward ``.model``, compile ``._orig_mod``)."""
    inner = model
    while not isinstance(inner, SegmentationModel):
        nxt = next(
            (
                c
                for c in (getattr(inner, n, None) for n in ("module", "model", "_orig_mod"))
                if isinstance(c, nn.Module)
            ),
            None,
        )
        if nxt is None:
            return model
        inner = nxt
    return inner


def memory_format_for_size(model: nn.Module, size: Sequence[int] | None) -> torch.memory_format:
    """The model's preferred format for inputs of spatial ``size`` (H, W): a channels_last model
    runs NCHW below its class's measured crossover (:data:`CHANNELS_LAST_MIN_PIXELS`). Other
    formats, 3-D sizes and ``size=None`` keep the model's preference."""
    preferred = resolve_memory_format(model, "auto")
    if preferred != torch.channels_last or size is None or len(size) != 2:
        return preferred
    name = type(_inner_model(model)).__name__
    threshold = CHANNELS_LAST_MIN_PIXELS.get(name, CHANNELS_LAST_MIN_PIXELS_DEFAULT)
    return torch.contiguous_format if int(size[0]) * int(size[1]) < threshold else preferred


def to_preferred_format(
    model: M, setting: bool | str | None = "auto", *, size: Sequence[int] | None = None
) -> M:
    """Convert ``model``'s 4-D parameters and buffers, in place, to the format chosen by
    :func:`resolve_memory_format`; returns ``model``. Parameters keep their identity (only
    their data is converted); call it after ``.to(device)`` and before the first optimizer step,
    so that optimizer state is created in the same format.

    With ``setting="auto"`` and the input ``size`` (H, W) known, the format follows
    :func:`memory_format_for_size` and is recorded on the model (its ``preferred_memory_format``),
    so that :func:`format_input` converts inputs to the same format."""
    if size is not None and (setting is None or setting == "auto"):
        chosen = memory_format_for_size(model, size)
        inner = _inner_model(model)
        if isinstance(inner, SegmentationModel):
            inner.preferred_memory_format = chosen
        return model.to(memory_format=chosen)
    return model.to(memory_format=resolve_memory_format(model, setting))


def format_input(x: torch.Tensor, model: nn.Module, setting: bool | str | None = "auto") -> torch.Tensor:
    """``x`` in the memory format ``model`` runs in (a no-op when it already is, or when ``x``
    is not 4-D). Convert inputs after padding/cropping, just before the forward pass."""
    if x.ndim != 4:
        return x
    return x.contiguous(memory_format=resolve_memory_format(model, setting))
