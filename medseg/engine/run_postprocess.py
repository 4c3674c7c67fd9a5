"""The post-processing a run decided (``postprocessing.json``), found from one of its checkpoints.

A checkpoint lives in ``RUN/checkpoints/``; a fold of a cross-validation in
``RUN/fold_k/checkpoints/``. The plan decided on the out-of-fold predictions of all folds
(``RUN/postprocessing.json``) wins over the one a single fold decided on its own validation
cases (``RUN/fold_k/postprocessing.json``): it saw every case once. ``predict`` and ``evaluate``
apply it by default and say so; ``--no-postprocess`` skips it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from medseg.postprocess import PLAN_FILE, PostprocessPlan

FOLD_DIR = re.compile(r"fold_\d+")


def run_plan_path(checkpoint: str | Path) -> Path | None:
    """The ``postprocessing.json`` that applies to ``checkpoint``, or None."""
    run = Path(checkpoint).resolve().parent.parent
    candidates = [run / PLAN_FILE]
    if FOLD_DIR.fullmatch(run.name):
        candidates.insert(0, run.parent / PLAN_FILE)
    return next((p for p in candidates if p.is_file()), None)


def load_run_plan(
    checkpoint: str | Path, enabled: bool = True, log: Callable[[str], object] | None = None
) -> tuple[PostprocessPlan | None, str]:
    """The run's plan (None when disabled or absent) and one line saying what is applied."""
    if not enabled:
        line = "post-processing: skipped (--no-postprocess)"
        plan = None
    elif (path := run_plan_path(checkpoint)) is None:
        line = "post-processing: none (the run has no postprocessing.json)"
        plan = None
    else:
        plan = PostprocessPlan.load(path)
        line = f"post-processing from {path}: {plan.describe()}"
    if log is not None:
        log(line)
    return plan, line
