"""Segmentation models, found by name: ``build_model("unet", in_channels=3, num_classes=2)``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from medseg.models.base import SegmentationModel
from medseg.models.registry import MODELS
from medseg.models.weights_file import load_weights_file

# Each module registers its models on import.
_MODEL_MODULES = ("unet", "unet3d", "unet_resnet", "fcn", "segnet", "pspnet", "deeplab", "befunet")
_HERE = Path(__file__).parent
for _name in _MODEL_MODULES:
    # Modules of the zoo land one by one; a module that is not there yet is skipped,
    # but an error inside an existing module is raised.
    if (_HERE / f"{_name}.py").exists() or (_HERE / _name / "__init__.py").exists():
        importlib.import_module(f"medseg.models.{_name}")


def build_model(
    name: str, in_channels: int, num_classes: int, *, weights: str | Path | None = None, **options: Any
) -> SegmentationModel:
    """Build a registered model with random initialisation, or load a local weights file
    (safetensors or a torch state dict; nothing is ever downloaded)."""
    model = MODELS.build(name, in_channels=in_channels, num_classes=num_classes, **options)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "SegmentationModel", "build_model", "list_models", "count_parameters"]
