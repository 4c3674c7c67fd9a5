"""The contract every segmentation model keeps (see DESIGN.md, "Tensors")."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """Base class: ``forward(x) -> logits [B, K, H, W]`` at the input size.

    ``input_multiple``: H and W must be multiples of it (inference pads to it).
    ``forward_aux(x) -> (logits, aux)`` returns auxiliary outputs (a dict of named
    tensors or lists of tensors); models without any return an empty dict.
    """

    input_multiple: int = 1

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
