"""Where and in which precision the engine computes: device choice and autocast."""

from __future__ import annotations

import torch

from medseg.errors import MedsegError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedsegError(f"device {name!r} requested but CUDA is not available")
    return dev


def autocast_for(device: torch.device, amp: str) -> torch.autocast:
    """The autocast context of ``train.amp`` (``none``, ``bf16``, ``fp16``) on ``device``."""
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and dtype is torch.float16:
        raise MedsegError("train.amp=fp16 needs CUDA; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


class InferenceAutocast(torch.nn.Module):
    """Runs ``model`` under bfloat16 (CPU) / ``dtype`` autocast and returns float32 logits
    (``eval.precision: bf16``). Attribute reads fall through to the model (``input_multiple``,
    ``preferred_memory_format``, ...), so inference code treats it as the model itself."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.device_type = device.type
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        return out.float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)
