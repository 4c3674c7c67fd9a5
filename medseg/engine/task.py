"""What a model predicts: the task (binary sigmoid, multi-class softmax or multilabel regions)
and its classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medseg.config import Config
from medseg.constants import IGNORE_INDEX
from medseg.data.regions import Regions, default_regions, parse_regions
from medseg.errors import ConfigError, MedsegError
from medseg.models import MODELS

__all__ = ["IGNORE_INDEX", "Task", "make_task", "prediction_regions", "spatial_dims"]


@dataclass(frozen=True)
class Task:
    """What a model predicts: ``binary`` (one sigmoid channel), ``multiclass`` (softmax) or
    ``multilabel`` (one sigmoid channel per region of ``regions``, see medseg.data.regions)."""

    mode: str
    num_classes: int
    class_names: tuple[str, ...]
    dims: int = 2  # spatial dimensions the model sees: 2 (slices) or 3 (volume patches)
    regions: Regions = ()
    region_names: tuple[str, ...] = ()

    @property
    def out_channels(self) -> int:
        if self.mode == "multilabel":
            return len(self.regions)
        return 1 if self.mode == "binary" else self.num_classes

    @property
    def report_names(self) -> tuple[str, ...]:
        """The names evaluation records carry, by index: class names, or for a region-based
        task the region names at 1..R (index 0 unused)."""
        return ("background", *self.region_names) if self.regions else self.class_names

    @classmethod
    def from_state(cls, state: dict) -> Task:
        """The task a checkpoint's JSON state describes."""
        try:
            regions = tuple(tuple(int(v) for v in r) for r in state.get("regions") or ())
            names = tuple(str(n) for n in state.get("region_names") or ())
        except (TypeError, ValueError, OverflowError):
            raise MedsegError("checkpoint header: state.regions must be lists of integer labels") from None
        if state["task_mode"] == "multilabel":
            if not regions:  # no region definitions saved: one region per output channel
                regions = tuple((k,) for k in range(1, int(state.get("out_channels", 1)) + 1))
            if len(names) != len(regions):
                names = tuple(f"region{i + 1}" for i in range(len(regions)))
        dims = int(state.get("spatial_dims", 2))  # checkpoints written before 3-D training are 2-D
        return cls(
            state["task_mode"], state["num_classes"], tuple(state["class_names"]), dims, regions, names
        )


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
    loss_mode: str,
    num_classes: int,
    class_names: list[str] | tuple[str, ...],
    regions: Mapping[str, Sequence[int]] | None = None,
    *,
    dims: int = 2,
) -> Task:
    """The task for a dataset of ``num_classes`` classes trained with ``loss.mode``
    (``auto``: multilabel when ``data.regions`` are given, else binary for two classes and
    multi-class otherwise; multilabel without regions: one region per foreground class)."""
    mode = loss_mode
    if mode == "auto":
        mode = "multilabel" if regions else "binary" if num_classes == 2 else "multiclass"
    if mode == "binary" and num_classes != 2:
        raise MedsegError(f"loss.mode=binary needs a 2-class dataset, this one has {num_classes} classes")
    if mode == "multilabel":
        names, sets = parse_regions(regions, num_classes) if regions else default_regions(num_classes)
        return Task(mode, num_classes, tuple(class_names), dims, sets, names)
    if regions:
        raise MedsegError(f"data.regions needs loss.mode multilabel (or auto), not {mode}")
    return Task(mode, num_classes, tuple(class_names), dims)


def prediction_regions(cfg: Config, channels: int) -> Regions | None:
    """The regions a run's model predicts, one per output channel (None: binary or multi-class),
    read from the run's configuration as :func:`make_task` decided them."""
    if cfg.data.regions:
        return tuple(tuple(sorted({int(v) for v in r})) for r in cfg.data.regions.values())
    if cfg.loss.mode == "multilabel":
        return tuple((k,) for k in range(1, channels + 1))
    return None
