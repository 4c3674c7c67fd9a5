"""What a model predicts: the task (binary sigmoid or multi-class softmax) and its classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medseg.constants import IGNORE_INDEX
from medseg.errors import ConfigError, MedsegError
from medseg.models import MODELS

__all__ = ["IGNORE_INDEX", "Task", "make_task", "spatial_dims"]


@dataclass(frozen=True)
class Task:
    """What a model predicts: ``binary`` (one sigmoid channel) or ``multiclass`` (softmax)."""

    mode: str
    num_classes: int
    class_names: tuple[str, ...]
    dims: int = 2  # spatial dimensions the model sees: 2 (slices) or 3 (volume patches)

    @property
    def out_channels(self) -> int:
        return 1 if self.mode == "binary" else self.num_classes

    @classmethod
    def from_state(cls, state: dict) -> Task:
        """The task a checkpoint's JSON state describes."""
        dims = state.get("spatial_dims", 2)  # checkpoints written before 3-D training are 2-D
        return cls(state["task_mode"], state["num_classes"], tuple(state["class_names"]), int(dims))


def model_dims(name: str) -> int:
    """The spatial dimensions a registered model works in (its ``dims`` metadata; 2 by default)."""
    return int(MODELS.get(name).meta.get("dims", 2))


def spatial_dims(cfg: Any) -> int:
    """2 or 3: a run trains on 3-D patches when ``data.patch_size`` has three sizes or the model
    is a 3-D one; both must agree (a 3-D model needs a 3-D patch, a 2-D model refuses one)."""
    patch = cfg.data.patch_size
    by_model = model_dims(cfg.model.name)
    by_patch = 3 if patch is not None else 2
    if by_model != by_patch:
        if by_model == 3:
            raise ConfigError(
                f"model {cfg.model.name} is 3-D: set data.patch_size to a [D, H, W] patch, e.g. [16, 128, 128]"
            )
        raise ConfigError(f"data.patch_size {list(patch)} needs a 3-D model; {cfg.model.name} is 2-D")
    return by_model


def make_task(
    loss_mode: str, num_classes: int, class_names: list[str] | tuple[str, ...], dims: int = 2
) -> Task:
    """The task for a dataset of ``num_classes`` classes trained with ``loss.mode``
    (``auto``: binary for two classes, multi-class otherwise)."""
    mode = loss_mode
    if mode == "auto":
        mode = "binary" if num_classes == 2 else "multiclass"
    if mode == "binary" and num_classes != 2:
        raise MedsegError(f"loss.mode=binary needs a 2-class dataset, this one has {num_classes} classes")
    if mode == "multilabel":
        raise MedsegError("multilabel training is not supported by the trainer yet; use multiclass")
    return Task(mode, num_classes, tuple(class_names), dims)
