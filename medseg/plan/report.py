"""A plan as commented YAML (the config file), as a table of decisions and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medseg.atomic import atomic_write_text
from medseg.config import load_config
from medseg.plan.cost import CPU_TRAIN_FWD_FLOPS, MIN_STEPS
from medseg.plan.planner import Plan


def plan_yaml(plan: Plan) -> str:
    """The config as YAML, headed by one comment line per decision (value and reason)."""
    fp = plan.fingerprint
    lines = [  # the root as the config writes it (under ${MEDSEG_DATA} when it can)
        f"# medseg plan of {plan.config['data']['root']} ({fp['format']}, {fp['num_cases']} cases, {plan.dims})",
        "# Every value can be edited here or overridden with --set key=value.",
        f"# CPU cost model: step s = batch x forward FLOPs / {CPU_TRAIN_FWD_FLOPS / 1e9:g} GFLOP/s, "
        f"at least {MIN_STEPS[plan.dims]} steps in the budget (medseg.plan.cost).",
    ]
    lines += [f"# {d.name}: {d.value} -- {d.reason}" for d in plan.decisions]
    return "\n".join(lines) + "\n" + yaml.safe_dump(plan.config, sort_keys=False)


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Check that the config loads, then write it atomically to ``path``."""
    load_config(json.loads(json.dumps(plan.config)))  # a plan that does not load is a bug: fail here
    return atomic_write_text(path, plan_yaml(plan))


def plan_json(plan: Plan) -> dict[str, Any]:
    """Dims, decisions and config as JSON-able values (``medseg plan --json``)."""
    return {
        "dims": plan.dims,
        "decisions": [{"name": d.name, "value": d.value, "reason": d.reason} for d in plan.decisions],
        "config": plan.config,
    }


def plan_table(plan: Plan):
    """A :class:`rich.table.Table` of the decisions."""
    from rich.table import Table  # rich: loaded only when a table is printed

    t = Table(title=f"medseg plan: {plan.fingerprint['root']}", header_style="bold")
    for col in ("decision", "value", "reason"):
        t.add_column(col)
    for d in plan.decisions:
        t.add_row(d.name, d.value, d.reason)
    return t
