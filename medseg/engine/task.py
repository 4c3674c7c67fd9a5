"""What a model predicts: the task (binary sigmoid or multi-class softmax) and its classes."""

from __future__ import annotations

from dataclasses import dataclass

from medseg.constants import IGNORE_INDEX
from medseg.errors import MedsegError

__all__ = ["IGNORE_INDEX", "Task", "make_task"]


@dataclass(frozen=True)
class Task:
    """What a model predicts: ``binary`` (one sigmoid channel) or ``multiclass`` (softmax)."""

    mode: str
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def out_channels(self) -> int:
        return 1 if self.mode == "binary" else self.num_classes

    @classmethod
    def from_state(cls, state: dict) -> Task:
        """The task a checkpoint's JSON state describes."""
        return cls(state["task_mode"], state["num_classes"], tuple(state["class_names"]))


def make_task(loss_mode: str, num_classes: int, class_names: list[str] | tuple[str, ...]) -> Task:
    """The task for a dataset of ``num_classes`` classes trained with ``loss.mode``
    (``auto``: binary for two classes, multi-class otherwise)."""
    mode = loss_mode
    if mode == "auto":
        mode = "binary" if num_classes == 2 else "multiclass"
    if mode == "binary" and num_classes != 2:
        raise MedsegError(f"loss.mode=binary needs a 2-class dataset, this one has {num_classes} classes")
    if mode == "multilabel":
        raise MedsegError("multilabel training is not supported by the trainer yet; use multiclass")
    return Task(mode, num_classes, tuple(class_names))
