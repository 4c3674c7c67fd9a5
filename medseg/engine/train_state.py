"""The state of a training run between epochs, and the two phases that move it to and from
disk: checkpointing (``last`` every epoch with optimiser and RNG, ``best`` on improvement)
and resuming from ``last``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medseg.engine.checkpoint import restore_training, save_checkpoint

# The model_state keys a resumed run must share with the checkpoint it resumes.
RESUME_MUST_MATCH = ("model_name", "model_options", "in_channels", "num_classes")


@dataclass
class TrainState:
    """Progress of a run: the last completed ``epoch``, optimiser ``step``s done, the ``best``
    validation Dice (-1: none yet), validations without improvement (``stale``), one log row
    per epoch (``history``), whether the run is ``finished``, and the schedule length planned
    from a time budget (``planned_steps``; None without a budget)."""

    epoch: int = 0
    step: int = 0
    best: float = -1.0
    stale: int = 0
    history: list[dict] = field(default_factory=list)
    finished: bool = False
    planned_steps: int | None = None
    # train.epochs of the run that wrote the checkpoint (read from its config, not saved twice)
    configured_epochs: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's JSON fields of this state."""
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "stale": self.stale,
            "history": self.history,
            "finished": self.finished,
        }
        if self.planned_steps is not None:
            out["planned_steps"] = self.planned_steps
        return out

    @classmethod
    def from_json(cls, saved: dict) -> TrainState:
        return cls(
            epoch=saved["epoch"],
            step=saved["step"],
            best=saved["best"],
            stale=saved["stale"],
            history=saved["history"],
            finished=bool(saved.get("finished", False)),
            planned_steps=saved.get("planned_steps"),
            configured_epochs=(saved.get("config") or {}).get("train", {}).get("epochs"),
        )

    def record_validation(self, dice: float) -> bool:
        """Count a validation score; True when it is the best so far."""
        if dice > self.best:
            self.best, self.stale = dice, 0
            return True
        self.stale += 1
        return False


def save_checkpoints(
    checkpoint_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict,
    state: TrainState,
    *,
    improved: bool,
) -> None:
    """``best.safetensors`` when ``improved`` (weights only), then ``last.safetensors`` with the
    optimiser and RNG states that make ``--resume`` exact. Both are written atomically."""
    saved = {**model_state, **state.to_json()}
    if improved:
        save_checkpoint(checkpoint_dir / "best.safetensors", model, {**saved, "best_epoch": state.epoch})
    save_checkpoint(checkpoint_dir / "last.safetensors", model, saved, optimizer=optimizer, rng=True)


def resume_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict
) -> TrainState:
    """Load weights, optimiser and RNG from ``path`` (refusing another model's checkpoint)
    and return the state the run had when it was written."""
    expect = {k: model_state[k] for k in RESUME_MUST_MATCH}
    return TrainState.from_json(restore_training(path, model, optimizer, expect=expect))


def resume_plan(state: TrainState, epochs: int) -> tuple[int, str]:
    """The first epoch a resumed run trains (``epochs + 1``: nothing to do) and the line that
    says so. A finished run is extended when ``epochs`` exceeds both the epochs it was run for
    and those it completed: it is no longer finished, a budget-planned schedule length and the
    early-stopping count are dropped, and the schedule is recomputed for ``epochs``."""
    done = state.epoch
    if state.finished:
        before = state.configured_epochs if state.configured_epochs is not None else done
        if epochs > max(before, done):
            state.finished, state.planned_steps, state.stale = False, None, 0
            return done + 1, (
                f"extending the finished run ({done} epochs of {before}) to {epochs} epochs: "
                f"the learning-rate schedule is recomputed for {epochs} epochs, resuming at epoch {done + 1}"
            )
        return epochs + 1, (
            f"nothing to do: the run is finished after {done} epochs (it was run for {before}); "
            f"pass more than {max(before, done)} epochs to extend it"
        )
    if done >= epochs:
        return epochs + 1, f"nothing to do: {done} epochs are done and this run has {epochs}"
    return done + 1, f"resuming at epoch {done + 1} of {epochs}"
