"""The workflow commands of the command line: cross-validation (``train --fold``,
``cv-report``), ``plan`` and ``ensemble`` (their arguments are in :mod:`medseg.cli_parser`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import medseg
from medseg.budget import parse_budget
from medseg.cli_output import notes_console, print_table
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.config import Config
    from medseg.plan import Plan


def _fold_arg(value: str | None) -> int | None:
    """``--fold K|all`` -> K, or None for all."""
    if value is None or value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise MedsegError(f"--fold {value!r}: expected a fold number or 'all'") from None


def cmd_train_folds(args: argparse.Namespace, cfg: Config) -> int:
    from medseg.engine.cross_val import run_cross_validation  # deferred: torch
    from medseg.engine.cv_report import report_table

    if args.evaluate:
        raise MedsegError("--evaluate with --fold: evaluate a fold's checkpoint with `medseg evaluate`")
    result = run_cross_validation(
        cfg, _fold_arg(args.fold), resume=bool(args.resume), overwrite=args.overwrite
    )
    if result["rank"] != 0:
        return 0
    if "report" in result:
        print_table(report_table(result["report"]))
        notes_console().print(f"report: {result['report']['paths']['cv_report.md']}")
    return 0


def cmd_cv_report(args: argparse.Namespace) -> int:
    from medseg.engine.cv_report import cv_report, report_table  # deferred: numpy, matplotlib

    report = cv_report(args.run, args.out)
    print_table(report_table(report))
    notes_console().print(f"report: {report['paths']['cv_report.md']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from medseg.plan import plan_json, plan_table, write_plan  # deferred: torch, readers

    plan = _plan_data(args.data_root, args.config, args.overrides, args.budget, args.dims)
    write_plan(plan, args.out)
    if args.json:
        print(json.dumps(plan_json(plan), indent=2))
    else:
        print_table(plan_table(plan))
    notes_console().print(f"config written to {args.out}; train it with: medseg train -c {args.out}")
    return 0


def planned_config(args: argparse.Namespace, overrides: list[str]) -> tuple[Config, Callable[[], None]]:
    """``medseg train --plan auto --data DATA`` (or ``--data DATA`` without ``-c``): plan DATA for
    the ``--budget`` (15 min when none is given) and return the planned config with the command
    line's options (``overrides``: --set and the shortcuts) on top, and a function that prints
    each decision with its reason (stderr: the notes), called once the data were checked. The
    plan's data options come from ``-c`` and the ``--set data.*`` values, as for ``medseg plan``."""
    from medseg.plan import plan_table  # deferred: torch, readers

    if args.data is None:
        raise MedsegError("--plan auto needs --data DATA: the dataset to plan from")
    data_sets = [o for o in args.overrides if o.startswith("data.")]
    plan = _plan_data(args.data, args.config, data_sets, args.budget, "auto")
    why = (
        ""
        if args.plan == "auto"
        else " (no -c given: planned from the data; --plan none trains built-in defaults)"
    )

    def announce() -> None:
        notes = notes_console()
        notes.print(f"plan for {args.data} ({plan.config['train']['budget_minutes']:g} min){why}:")
        notes.print(plan_table(plan))

    return medseg.load_config(plan.config, overrides), announce  # the plan holds train.budget_minutes


def _plan_data(root: Path, config: Path | None, data_sets: list[str], budget: str | None, dims: str) -> Plan:
    """The plan of the dataset ``root`` (data options from ``config`` and ``data_sets``) for a
    training budget (``--budget``; 15 min when none is given): ``medseg plan`` and ``train --plan``."""
    from medseg.plan import plan_dataset  # deferred: torch, readers

    minutes = (parse_budget(budget) if budget else None) or 15.0
    cfg = medseg.load_config(config, [f"data.root={json.dumps(str(root))}", *data_sets])
    return plan_dataset(cfg.data, budget_minutes=minutes, dims=dims, root_text=_root_text(root))


def _root_text(root: Path) -> str:
    """The data root as the config should say it: under $MEDSEG_DATA as ``${MEDSEG_DATA}/...``."""
    import os

    base = os.environ.get("MEDSEG_DATA")
    if base:
        try:
            rel = root.resolve().relative_to(Path(base).resolve()).as_posix()
            return "${MEDSEG_DATA:-" + base + "}/" + rel
        except ValueError:
            pass
    return str(root)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from medseg.engine.ensemble import ensemble_predict, ensemble_probability_folders  # deferred: torch

    if args.from_probabilities:
        result = ensemble_probability_folders(args.sources, args.out)
    else:
        if len(args.sources) < 2:
            raise MedsegError("ensemble needs RUN_OR_CKPT... INPUT (at least one model and the input)")
        result = ensemble_predict(
            args.sources[:-1],
            args.sources[-1],
            args.out,
            device=args.device,
            tta=args.tta,
            save_probs=args.save_probabilities,
            overwrite=args.overwrite,
        )
    notes_console().print(f"wrote {result['count']} ensembled predictions to {result['masks']}")
    return 0
