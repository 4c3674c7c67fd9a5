"""A wall-clock training budget turned into a number of steps.

A learning-rate schedule is only complete if it knows its length. Under a time budget the
length is estimated from the measured cost of training: after the first few timed steps
(so that a budget shorter than an epoch still gets a schedule), then at the start of every
later epoch from the average wall time per step so far (validation, checkpointing and logging
included). The schedule's total is set to that estimate, so the learning rate reaches its
floor when the budget ends, and training stops at the total.

An estimate can be optimistic (the machine slows down, validation costs more than it did).
As a safety net the schedule's position is never behind the share of the time already spent
(:meth:`TimeBudget.schedule_position`): the learning rate still reaches its floor when the
time is up, where training then stops.

A validation is the one large pause the average cannot foresee (the first one especially). When
the planned end comes before the next validation, the trainer moves this epoch's validation to
the end of the run (``trainer.validation_deferred``), so a validation cannot eat the time the
last planned steps need (an ACDC run once validated at step 742 of 800, found its time spent and
stopped with the learning rate at 9 % of its peak).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# The clock budgets read unless given another (tests replace it with a simulated one).
CLOCK: Callable[[], float] = time.monotonic


class TimeBudget:
    """``seconds`` of training, planned as a number of optimiser steps.

    ``max_steps`` (``train.epochs`` x steps per epoch) caps the plan: a budget never makes a
    run longer than ``--epochs``. ``fixed_plan`` (a resumed run's) is kept, never re-planned.
    """

    def __init__(
        self,
        seconds: float,
        max_steps: int,
        *,
        calibration_steps: int = 5,
        fixed_plan: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.seconds, self.max_steps = float(seconds), int(max_steps)
        self.fixed_plan = fixed_plan  # a resumed run keeps the plan its checkpoint holds
        self.calibration_steps = calibration_steps
        self.clock = clock or CLOCK
        self.t_start = self.clock()
        self.start_step = 0
        self._first_step: tuple[int, float] | None = None
        self._calibrated = False
        self.synced_elapsed = 0.0  # elapsed seconds as rank 0 last measured them (see sync)

    def start(self, step: int) -> None:
        """The run (or the resumed run) begins at optimiser step ``step``, now."""
        self.t_start, self.start_step = self.clock(), step
        self._first_step, self._calibrated = None, False
        self.synced_elapsed = 0.0

    def elapsed(self) -> float:
        return self.clock() - self.t_start

    def expired(self) -> bool:
        return self.elapsed() >= self.seconds

    def sync(self, elapsed: float) -> bool:
        """Record the elapsed time every rank agrees on (rank 0's, broadcast); True when the
        time is up."""
        self.synced_elapsed = elapsed
        return elapsed >= self.seconds

    def schedule_position(self, step: int, total: int) -> int:
        """Where the schedule stands: ``step``, or further when more of the time than of the
        planned steps is spent (from the synced time, so every rank sets the same rate)."""
        by_time = int(self.synced_elapsed / self.seconds * total)
        return max(step, min(by_time, total))

    def _plan(self, step: int, seconds_per_step: float) -> int:
        left = max(0.0, self.seconds - self.elapsed())
        more = math.floor(left / seconds_per_step) if seconds_per_step > 0 else self.max_steps
        return max(step, min(self.max_steps, step + more))

    def after_step(self, step: int) -> int | None:
        """Call after each optimiser step (``step`` = steps done). Returns a first plan once
        ``calibration_steps`` steps have been timed (the very first step, which pays for
        warm-up, is not timed), else None."""
        if self._calibrated or self.fixed_plan is not None:
            return None
        now = self.clock()
        if self._first_step is None:
            self._first_step = (step, now)
            return None
        s0, t0 = self._first_step
        if step - s0 < self.calibration_steps:
            return None
        self._calibrated = True
        return self._plan(step, (now - t0) / (step - s0))

    def replan(self, step: int) -> int | None:
        """Call at the start of a later epoch: the plan from the average wall time per step
        since the start, earlier epochs' validation, checkpointing and logging included
        (None when the plan is fixed)."""
        if self.fixed_plan is not None:
            return None
        self._calibrated = True
        done = step - self.start_step
        return self._plan(step, self.elapsed() / done) if done > 0 else self.max_steps
