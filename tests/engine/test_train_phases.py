"""The trainer's phases, each on its own: setup, the step, the state and its checkpoint
round trip, the stop decision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medseg.config import load_config
from medseg.engine.checkpoint import read_checkpoint
from medseg.engine.distributed import Distributed
from medseg.engine.train_setup import build_loop, build_parts, resume_checkpoint_path
from medseg.engine.train_state import TrainState, resume_state, save_checkpoints
from medseg.engine.train_step import prepare_batch, train_step
from medseg.engine.trainer import stop_reason
from medseg.errors import MedsegError

TINY = [
    "data.format=synthetic",
    "data.synthetic.n=16",
    "data.synthetic.size=32",
    "data.size=[32,32]",
    "data.split.val_fraction=0.25",
    "data.split.test_fraction=0.0",
    "model.options={depth: 2, base_width: 4}",
    "train.batch_size=4",
    "train.seed=5",
    "train.log_tensorboard=false",
    "optim.lr=0.01",
]


@pytest.fixture
def parts_and_loop(tmp_path):
    cfg = load_config(None, TINY + [f"output_dir={tmp_path}"])
    parts = build_parts(cfg, Distributed(), torch.device("cpu"))
    return parts, build_loop(parts)


def test_step_reduces_the_loss_on_a_fixed_phantom_batch(parts_and_loop):
    parts, loop = parts_and_loop
    batch = next(iter(loop.loader))
    loop.step.net.train()
    losses = [train_step(loop.step, batch)[0] for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_step_marks_pixels_outside_the_roi_as_ignored(parts_and_loop):
    parts, loop = parts_and_loop
    batch = next(iter(loop.loader))
    roi = torch.ones_like(batch["mask"], dtype=torch.bool)
    roi[:, :4] = False
    _, target, _ = prepare_batch(loop.step, {**batch, "roi": roi})
    assert (target[:, :4] == 255).all() and torch.equal(target[:, 4:], batch["mask"][:, 4:])


def test_a_diverging_step_names_epoch_and_step(parts_and_loop):
    parts, loop = parts_and_loop
    batch = next(iter(loop.loader))
    batch = {**batch, "image": torch.full_like(batch["image"], float("nan"))}
    with pytest.raises(MedsegError, match="diverged.*at epoch 3, step 7"):
        train_step(loop.step, batch, where=" at epoch 3, step 7")


def test_state_survives_a_checkpoint_round_trip(parts_and_loop, tmp_path):
    parts, loop = parts_and_loop
    state = TrainState(epoch=2, step=8, best=0.5, stale=1, history=[{"epoch": 1}, {"epoch": 2}])
    save_checkpoints(tmp_path, parts.model, parts.optimizer, parts.model_state, state, improved=True)
    _, meta = read_checkpoint(tmp_path / "best.safetensors")
    assert meta["state"]["best_epoch"] == 2 and "optimizer" not in meta
    _, meta = read_checkpoint(tmp_path / "last.safetensors")
    assert "optimizer" in meta and "rng" in meta and "planned_steps" not in meta["state"]
    back = resume_state(tmp_path / "last.safetensors", parts.model, parts.optimizer, parts.model_state)
    assert back == state
    other = {**parts.model_state, "num_classes": 7}
    with pytest.raises(MedsegError, match="num_classes"):
        resume_state(tmp_path / "last.safetensors", parts.model, parts.optimizer, other)


def test_validation_scores_update_best_and_patience():
    state = TrainState()
    assert state.record_validation(0.3) and state.best == 0.3 and state.stale == 0
    assert not state.record_validation(0.2) and state.stale == 1
    assert not state.record_validation(0.3) and state.stale == 2  # equal is no improvement
    assert state.record_validation(0.4) and state.stale == 0


def test_stop_decision():
    cfg = load_config(None, TINY + ["train.epochs=10", "train.early_stopping=2"])
    parts = SimpleNamespace(cfg=cfg, dist=Distributed())
    loop = SimpleNamespace(max_steps=40)
    state = TrainState(epoch=3, step=12, stale=1)
    assert stop_reason(parts, loop, state, None) is None and not state.finished
    state.stale = 2
    assert stop_reason(parts, loop, state, None) == "early stopping" and state.finished
    state = TrainState(epoch=10, step=40)
    assert stop_reason(parts, loop, state, None) is None and state.finished  # the loop ends by itself


def test_resume_needs_a_checkpoint(tmp_path):
    cfg = load_config(None, TINY + [f"output_dir={tmp_path}"])
    assert resume_checkpoint_path(cfg, False) is None
    with pytest.raises(MedsegError, match="nothing to resume from"):
        resume_checkpoint_path(cfg, True)


def test_budget_stop_is_finished_only_when_the_planned_steps_are_done():
    from medseg.engine.budget import TimeBudget

    now = [0.0]
    cfg = load_config(None, TINY + ["train.epochs=100", "train.budget_minutes=1"])
    parts = SimpleNamespace(cfg=cfg, dist=Distributed())
    loop = SimpleNamespace(max_steps=400)
    budget = TimeBudget(60.0, 400, clock=lambda: now[0])
    budget.start(0)
    state = TrainState(epoch=5, step=20, planned_steps=20)
    assert stop_reason(parts, loop, state, budget) == "budget" and state.finished
    state = TrainState(epoch=5, step=18, planned_steps=20)
    now[0] = 61.0  # the time ran out before the plan: resumable
    assert stop_reason(parts, loop, state, budget) == "budget" and not state.finished
