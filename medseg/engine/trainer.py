"""The training loop as a short sequence of named phases.

``train`` = setup (``train_setup``) -> resume (``train_state``) -> per epoch: the steps
(``train_step``) under the learning-rate schedule (``schedule``, ``budget``), validation
(``validation``), checkpointing (``train_state``), logging (``train_log``), the stop
decision. Each phase is a function of the run's parts, its loop and its :class:`TrainState`.

One code path serves one process and many: under ``torchrun`` (``WORLD_SIZE`` > 1) the
model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA), each rank
reads its shard of every epoch, and rank 0 validates and writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from medseg.atomic import atomic_write_text
from medseg.config import Config
from medseg.data.splits import save_splits
from medseg.data.splits_io import SPLITS_FILE
from medseg.engine.budget import TimeBudget
from medseg.engine.device import resolve_device  # noqa: F401 (older import path, kept for callers)
from medseg.engine.progress import console, make_progress
from medseg.engine.run_folder import claim_run_folder
from medseg.engine.run_splits import reuse_saved_split
from medseg.engine.schedule import lr_factor, set_learning_rate
from medseg.engine.train_log import epoch_line, log_epoch, open_tensorboard
from medseg.engine.train_setup import (
    TrainLoop,
    TrainParts,
    build_loop,
    build_parts,
    resume_checkpoint_path,
    setup_device,
)
from medseg.engine.train_state import TrainState, resume_plan, resume_state, save_checkpoints
from medseg.engine.train_step import train_step
from medseg.engine.validation import validate
from medseg.errors import MedsegError
from medseg.models import count_parameters


@dataclass
class EpochResult:
    """What the step phase of one epoch measured."""

    loss_sum: float
    seen: int
    seconds: float


@dataclass
class Bar:
    """The run's progress bar."""

    progress: Progress
    task: TaskID


def schedule_total(loop: TrainLoop, state: TrainState) -> int:
    """The schedule's length in steps: planned from the time budget, else epochs x steps."""
    return loop.max_steps if state.planned_steps is None else state.planned_steps


def apply_learning_rate(
    parts: TrainParts, loop: TrainLoop, state: TrainState, budget: TimeBudget | None
) -> None:
    """Set the learning rate of the next step from the schedule (under a time budget, never
    behind the share of the time spent)."""
    cfg, total = parts.cfg, schedule_total(loop, state)
    position = state.step if budget is None else budget.schedule_position(state.step, total)
    factor = lr_factor(position, total, loop.warmup, cfg.schedule)
    set_learning_rate(parts.optimizer, cfg.optim.lr * factor)


def plan_budget(parts: TrainParts, loop: TrainLoop, state: TrainState, plan: int | None, bar: Bar) -> None:
    """Adopt a step plan from the time budget (rank 0's, on every rank) as the schedule's total."""
    if plan is None:
        return
    plan = parts.dist.broadcast(plan)
    first = state.planned_steps is None
    state.planned_steps = plan
    bar.progress.update(bar.task, total=plan)
    if first and parts.dist.main:
        console.print(
            f"time budget {parts.cfg.train.budget_minutes:g} min: the schedule is planned for {plan} steps "
            f"({plan / loop.steps_per_epoch:.1f} epochs of {loop.steps_per_epoch} steps)"
        )


def run_epoch(
    parts: TrainParts, loop: TrainLoop, state: TrainState, epoch: int, budget: TimeBudget | None, bar: Bar
) -> EpochResult:
    """The step phase: one pass over this epoch's batches (at most ``steps_per_epoch``); under
    a time budget it ends early when the planned steps are done or the time is up."""
    loop.sampler.set_epoch(epoch)
    if hasattr(parts.data.train, "set_epoch"):
        parts.data.train.set_epoch(epoch)
    t0 = time.monotonic()
    running, seen = 0.0, 0
    for i, batch in enumerate(loop.loader):
        if i >= loop.steps_per_epoch:
            break
        apply_learning_rate(parts, loop, state, budget)
        loss, n = train_step(loop.step, batch, where=f" at epoch {epoch}, step {i}")
        state.step += 1
        running += loss * n
        seen += n
        description = f"epoch {epoch}/{parts.cfg.train.epochs} loss {running / seen:.4f}"
        bar.progress.update(bar.task, advance=1, description=description)
        if budget is not None:
            plan_budget(parts, loop, state, budget.after_step(state.step), bar)
            if budget.sync(parts.dist.broadcast(budget.elapsed())) or state.step >= schedule_total(
                loop, state
            ):
                break  # the budget is spent mid-epoch: validate and checkpoint, then stop
    return EpochResult(running, seen, time.monotonic() - t0)


def budget_spent(
    parts: TrainParts, loop: TrainLoop, state: TrainState, budget: TimeBudget | None, bar: Bar
) -> bool:
    """Before an epoch (after the first of this run): re-plan from the time spent so far, earlier
    checkpointing and logging included; True when the plan is done or the time is up."""
    if budget is None or state.step == budget.start_step:
        return False
    plan_budget(parts, loop, state, budget.replan(state.step), bar)
    expired = budget.sync(parts.dist.broadcast(budget.elapsed()))
    return expired or state.step >= schedule_total(loop, state)


def epoch_row(parts: TrainParts, state: TrainState, epoch: int, result: EpochResult) -> dict[str, Any]:
    """The log row of an epoch (``val_dice`` filled in by validation)."""
    return {
        "epoch": epoch,
        "step": state.step,
        "lr": parts.optimizer.param_groups[0]["lr"],
        "train_loss": parts.dist.mean(result.loss_sum / max(result.seen, 1)),
        "val_dice": None,
        "epoch_seconds": round(result.seconds, 3),
        "images_per_second": round(result.seen * parts.dist.world / max(result.seconds, 1e-9), 3),
    }


def validation_deferred(
    loop: TrainLoop, state: TrainState, epoch: int, budget: TimeBudget | None, cfg: Config
) -> bool:
    """Under a time budget, whether this epoch's validation moves to the end of the run: when the
    schedule's planned end comes before the next validation would, and the run goes on after this
    epoch. The time the validation would take then goes to the planned steps that bring the
    learning rate down to its floor (a validation that ate the time left used to end the run with
    the rate still well above it), and the model at the end is validated anyway
    (:func:`validate_last_epoch`)."""
    if budget is None or state.planned_steps is None or epoch == cfg.train.epochs:
        return False
    if state.step >= state.planned_steps or budget.expired():
        return False  # the run ends after this epoch: this is its last validation
    next_validation = min(cfg.train.epochs, (epoch // cfg.train.val_every + 1) * cfg.train.val_every)
    return state.planned_steps < state.step + (next_validation - epoch) * loop.steps_per_epoch


def validate_phase(
    parts: TrainParts, state: TrainState, row: dict, *, last: bool = False, deferred: bool = False
) -> bool:
    """Rank 0 validates every ``val_every`` epochs and at the last one (``last``: a run that
    stopped early), unless ``deferred`` (:func:`validation_deferred`); True when the model is the
    best so far (without a validation split the latest model is the best we know)."""
    cfg, epoch = parts.cfg, row["epoch"]
    if not parts.dist.main:
        return False
    if not len(parts.data.val):
        return True
    if deferred:
        return False
    if last or epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs:
        row["val_dice"] = validate(parts.model, parts.data.val, parts.task, cfg, parts.device)
        return state.record_validation(row["val_dice"])
    return False


def stop_reason(
    parts: TrainParts, loop: TrainLoop, state: TrainState, budget: TimeBudget | None
) -> str | None:
    """Why to stop after this epoch (``budget``, ``early stopping``), or None; also decides
    whether the run is finished (a time-out before the planned steps can be resumed)."""
    cfg = parts.cfg
    planned_done = budget is not None and state.step >= schedule_total(loop, state)
    over_budget = budget is not None and (planned_done or budget.expired())
    patience_out = cfg.train.early_stopping is not None and state.stale >= cfg.train.early_stopping
    state.finished = state.epoch == cfg.train.epochs or patience_out or planned_done
    if not parts.dist.broadcast(over_budget or patience_out):
        return None
    return "budget" if over_budget else "early stopping"


def start_output(parts: TrainParts) -> Any:
    """Rank 0: the output folder, its ``config.yaml``, TensorBoard (returned) and the banner."""
    cfg, out = parts.cfg, parts.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    save_splits(out / SPLITS_FILE, parts.data.splits, cfg.data)  # the exact cases, reused by a rerun
    tensorboard = open_tensorboard(out, cfg.train.log_tensorboard)
    console.print(
        f"[bold]{cfg.model.name}[/] ({count_parameters(parts.model) / 1e6:.2f} M parameters) on "
        f"{parts.device}, {len(parts.data.train)} training / {len(parts.data.val)} validation samples, "
        f"{parts.task.mode} with {parts.task.num_classes} classes, loss {cfg.loss.name}"
    )
    return tensorboard


def make_budget(cfg: Config, loop: TrainLoop, state: TrainState) -> TimeBudget | None:
    """The time budget (``train.budget_minutes``), started now at the state's step."""
    if cfg.train.budget_minutes is None:
        return None
    budget = TimeBudget(cfg.train.budget_minutes * 60, loop.max_steps, fixed_plan=state.planned_steps)
    budget.start(state.step)
    return budget


def validate_last_epoch(parts: TrainParts, loop: TrainLoop, state: TrainState, tensorboard: Any) -> None:
    """Rank 0: a run that stopped between two validations (a time budget rarely ends on a multiple
    of ``val_every``) validates its last epoch now, so the model at the end of the schedule can
    still become ``best.safetensors`` instead of being discarded unseen."""
    if not parts.dist.main or not state.history or not len(parts.data.val):
        return
    row = state.history[-1]
    if row["val_dice"] is not None or row["epoch"] != state.epoch:
        return
    improved = validate_phase(parts, state, row, last=True)
    line = f"epoch {row['epoch']} (the last one) validated: val Dice {row['val_dice']:.4f}"
    end_epoch(parts, loop, state, tensorboard, improved, line=line)


def end_epoch(
    parts: TrainParts,
    loop: TrainLoop,
    state: TrainState,
    tensorboard: Any,
    improved: bool,
    line: str | None = None,
) -> None:
    """Rank 0: checkpoint phase then log phase (``line``: the console line, else the epoch's)."""
    if not parts.dist.main:
        return
    m = parts.model
    save_checkpoints(parts.checkpoint_dir, m, parts.optimizer, parts.model_state, state, improved=improved)
    log_epoch(parts.out, state.history, tensorboard)
    console.print(line or epoch_line(state.history[-1]))


def check_split_has_cases(parts: TrainParts, split: str | None) -> None:
    """Refuse, before any training, a run whose ``split`` (to be evaluated after it) is empty."""
    if split is None:
        return
    cases = getattr(parts.data, split, None)
    if cases is None:
        raise MedsegError(f"unknown split {split!r} (expected train, val or test)")
    if len(cases) == 0:
        raise MedsegError(
            f"{parts.cfg.data.root}: the {split} split has no cases, so the run could not be evaluated "
            f"on it; set data.split.{split}_fraction (or a split file) or evaluate another split"
        )


def train(
    cfg: Config,
    *,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    evaluate_split: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; returns a summary dict (``out_dir``, ``best_val_dice``,
    ``checkpoint``, ``history``). Checkpoints go to ``OUT/checkpoints/{last,best}.safetensors``.
    ``on_ready`` is called on rank 0 once the data were read and checked, before the run folder
    is claimed (the CLI prints a plan's decisions there, so bad data still gives one line).

    Rank 0 holds the output folder's lock for the run (:mod:`medseg.engine.run_folder`); a
    folder holding a previous run is refused unless ``resume`` or ``overwrite``. With
    ``evaluate_split`` (the split the caller evaluates afterwards) an empty split is refused
    before training."""
    dist, device = setup_device(cfg)
    if resume or overwrite:  # a rerun into the folder trains on the split it saved
        cfg = reuse_saved_split(cfg, log=console.print if dist.main else lambda _: None)
    resume_path = resume_checkpoint_path(cfg, resume)
    parts = build_parts(cfg, dist, device)  # reads and checks the data: a bad dataset writes nothing
    check_split_has_cases(parts, evaluate_split)
    if dist.main and on_ready is not None:
        on_ready()
    if not dist.main:
        return _train(parts, resume_path)
    with claim_run_folder(cfg.output_dir, resume=resume_path is not None, overwrite=overwrite) as removed:
        if removed:
            console.print(
                f"removed {len(removed)} temporary file(s) an interrupted run left in {cfg.output_dir}"
            )
        return _train(parts, resume_path)


def _train(parts: TrainParts, resume_path: Path | None) -> dict:
    """The run itself, its folder claimed: resume, the epochs, the summary."""
    cfg, dist = parts.cfg, parts.dist
    state = TrainState()
    first_epoch = 1
    if resume_path is not None:
        state = resume_state(resume_path, parts.model, parts.optimizer, parts.model_state)
        first_epoch, line = resume_plan(state, cfg.train.epochs)
        if dist.main:
            console.print(f"{resume_path}: {line}")
    loop = build_loop(parts)
    tensorboard = start_output(parts) if dist.main else None
    budget = make_budget(cfg, loop, state)
    reason = "epochs" if first_epoch <= cfg.train.epochs else "nothing to do"
    loop.step.net.train()
    with make_progress(transient=False) as progress:
        done = min(first_epoch - 1, cfg.train.epochs) * loop.steps_per_epoch
        bar = Bar(progress, progress.add_task("training", total=schedule_total(loop, state), completed=done))
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            if budget_spent(parts, loop, state, budget, bar):
                reason = "budget"  # spent by the last epoch's checkpointing and logging
                break
            result = run_epoch(parts, loop, state, epoch, budget, bar)
            row = epoch_row(parts, state, epoch, result)
            deferred = validation_deferred(loop, state, epoch, budget, cfg)
            improved = validate_phase(parts, state, row, deferred=deferred)
            state.history.append(row)
            state.epoch = epoch
            stop = stop_reason(parts, loop, state, budget)
            end_epoch(parts, loop, state, tensorboard, improved)
            if stop is not None:
                reason = stop
                break
    validate_last_epoch(parts, loop, state, tensorboard)
    return finish(parts, loop, state, reason, tensorboard)


def finish(parts: TrainParts, loop: TrainLoop, state: TrainState, reason: str, tensorboard: Any) -> dict:
    """Close the logs, wait for every rank, and summarise the run."""
    if tensorboard is not None:
        tensorboard.close()
    if parts.dist.main and state.planned_steps is not None:
        console.print(
            f"the time budget allowed {state.planned_steps} steps "
            f"({state.planned_steps / loop.steps_per_epoch:.1f} epochs); {state.step} were run"
        )
    parts.dist.barrier()
    best_path = parts.checkpoint_dir / "best.safetensors"
    last_path = parts.checkpoint_dir / "last.safetensors"
    return {
        "out_dir": str(parts.out),
        "best_val_dice": state.best if state.best >= 0 else None,
        "checkpoint": str(best_path if best_path.exists() else last_path),
        "last_checkpoint": str(last_path),
        "history": state.history,
        "stop_reason": reason,
        "task": parts.task,
        "rank": parts.dist.rank,
        "planned_steps": state.planned_steps,
    }
