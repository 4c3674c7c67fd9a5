"""The time budget becomes a step plan, and the schedule it sets ends at its floor."""

from __future__ import annotations

import csv

import pytest

from medseg.config import ScheduleConfig, load_config
from medseg.engine import budget as budget_mod
from medseg.engine import trainer as trainer_mod
from medseg.engine.budget import TimeBudget
from medseg.engine.schedule import lr_factor
from medseg.engine.trainer import train


class SimClock:
    """A clock that advances ``tick`` seconds each time it is read."""

    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plan_after_calibration_steps_uses_the_measured_step_time():
    clock = StepClock()
    b = TimeBudget(100.0, max_steps=10_000, calibration_steps=4, clock=clock)
    b.start(0)
    clock.t = 3.0  # the first step pays for warm-up and is not timed
    assert b.after_step(1) is None
    for step in range(2, 6):
        clock.t += 0.5
        plan = b.after_step(step)
    # 5 steps done at t = 5 s; 95 s left at 0.5 s/step -> 190 more steps
    assert plan == 5 + 190
    assert b.after_step(6) is None  # one first plan only


def test_replan_uses_the_all_in_average_and_is_capped():
    clock = StepClock()
    b = TimeBudget(60.0, max_steps=1000, clock=clock)
    b.start(0)
    clock.t = 20.0  # 10 steps, validation and checkpoint included: 2 s/step
    assert b.replan(10) == 10 + 20
    capped = TimeBudget(60.0, max_steps=25, clock=clock)
    capped.start(0)
    clock.t += 1.0
    assert capped.replan(5) == 25  # never longer than --epochs
    late = TimeBudget(60.0, max_steps=1000, clock=clock)
    late.start(0)
    clock.t += 70.0
    assert late.replan(7) == 7 and late.expired()  # no time left: stop where we are


def test_the_schedule_position_follows_the_clock_when_the_plan_was_optimistic():
    b = TimeBudget(100.0, max_steps=1000, clock=StepClock())
    b.start(0)
    assert not b.sync(30.0)
    assert b.schedule_position(50, 200) == 60  # 30 % of the time, 25 % of the steps
    assert b.schedule_position(80, 200) == 80  # ahead of the clock: the steps rule
    assert b.sync(100.0) and b.schedule_position(150, 200) == 200  # time up: at the floor


def test_a_fixed_plan_is_never_replanned():
    clock = StepClock()
    b = TimeBudget(60.0, max_steps=1000, fixed_plan=123, clock=clock)
    b.start(50)
    for step in range(51, 60):
        clock.t += 0.1
        assert b.after_step(step) is None
    assert b.replan(60) is None


@pytest.mark.parametrize("name", ["poly", "cosine"])
def test_a_budget_planned_schedule_runs_to_its_floor(name):
    """Simulated training at 0.3 s/step under a 60 s budget: the planned total is reached
    when the time is used up, and the learning rate has decayed to the floor there."""
    cfg = ScheduleConfig(name=name, warmup_epochs=0, power=0.9, min_lr_ratio=0.01)
    clock = StepClock()
    b = TimeBudget(60.0, max_steps=100_000, calibration_steps=5, clock=clock)
    b.start(0)
    total, step, lrs = 100_000, 0, []
    while step < total and not b.expired():
        lrs.append(lr_factor(step, total, 0, cfg))
        clock.t += 0.3
        step += 1
        plan = b.after_step(step)
        total = plan if plan is not None else total
    assert step == total == 200  # 60 s / 0.3 s
    assert lr_factor(total, total, 0, cfg) == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(lr_factor(total - 1, total, 0, cfg))
    assert lrs[-1] - 0.01 < 0.05  # the last step runs less than 5 % of the peak above the floor


def test_trainer_stops_at_the_planned_step_with_the_schedule_complete(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(budget_mod, "CLOCK", SimClock(0.01))
    over = [
        "data.format=synthetic",
        "data.synthetic.n=24",
        "data.synthetic.size=32",
        "data.size=[32,32]",
        "data.split.val_fraction=0.25",
        "data.split.test_fraction=0.0",
        "model.options={depth: 2, base_width: 4}",
        "train.batch_size=4",
        "train.log_tensorboard=false",
        "optim.lr=0.01",
        "schedule.name=poly",
        "train.epochs=1000",
        "train.budget_minutes=0.005",  # 0.3 simulated seconds
        f"output_dir={tmp_path}",
    ]
    cfg = load_config(None, over)
    result = train(cfg)
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    planned = result["planned_steps"]
    assert result["stop_reason"] == "budget"
    assert 4 < planned < 4000 and int(rows[-1]["step"]) == planned
    # the last step ran at the end of the schedule (or further along, where the clock was ahead)
    assert float(rows[-1]["lr"]) <= 0.01 * lr_factor(planned - 1, planned, 0, cfg.schedule) + 1e-12
    assert lr_factor(planned, planned, 0, cfg.schedule) == 0.0
    err = capfd.readouterr().err
    assert f"the time budget allowed {planned} steps" in err


@pytest.mark.parametrize(
    ("seconds", "validated_epochs", "last_step"),
    [
        (35.0, ["2"], 35),  # plan 35 steps, epochs of 30: epoch 1's validation would eat the time left
        (100.0, ["1", "2"], 60),  # the plan reaches the next validation: epoch 1 validates
    ],
)
def test_a_validation_that_would_eat_the_time_left_moves_to_the_end(
    tmp_path, monkeypatch, seconds, validated_epochs, last_step
):
    """Steps take 1 s and a validation 20 s of a simulated clock. A run planned to end shortly
    after an epoch used to validate there, find its time spent and stop with the learning rate far
    above its floor; now it trains the planned steps and validates its last epoch."""
    clock = StepClock()
    monkeypatch.setattr(budget_mod, "CLOCK", clock)

    def timed(real, seconds_per_call):
        def call(*args, **kwargs):
            clock.t += seconds_per_call
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(trainer_mod, "train_step", timed(trainer_mod.train_step, 1.0))
    monkeypatch.setattr(trainer_mod, "validate", timed(trainer_mod.validate, 20.0))
    over = [
        "data.format=synthetic",
        "data.synthetic.n=40",
        "data.synthetic.size=16",
        "data.size=[16,16]",
        "data.split.val_fraction=0.25",
        "data.split.test_fraction=0.0",
        "model.options={depth: 2, base_width: 4}",
        "train.batch_size=1",  # 30 steps per epoch
        "train.log_tensorboard=false",
        "optim.lr=0.01",
        "schedule.name=poly",
        "train.epochs=1000",
        f"train.budget_minutes={seconds / 60}",
        f"output_dir={tmp_path}",
    ]
    cfg = load_config(None, over)
    result = train(cfg)
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows if r["val_dice"]] == validated_epochs
    assert result["planned_steps"] == int(rows[-1]["step"]) == last_step
    assert float(rows[-1]["lr"]) <= 0.01 * lr_factor(last_step - 1, last_step, 0, cfg.schedule) + 1e-12
