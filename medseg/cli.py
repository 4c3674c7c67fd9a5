"""The ``medseg`` command: parse, call the Python API (:mod:`medseg.api`), print.

Every subcommand prints one line ``medseg: error: ...`` naming the file or option
on bad input (``--debug`` shows the traceback instead).

Start-up cost: the module imports only the standard library and light medseg modules, so
``medseg --help`` does not load torch, SciPy, pydantic or rich (measured with
``python -X importtime -c "import medseg.cli"``). A command imports the heavy layer it needs
when it runs; each such import says which dependency it defers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import medseg
from medseg.atomic import atomic_write_text
from medseg.budget import parse_budget
from medseg.cli_output import (
    losses_table,
    models_table,
    notes_console,
    print_per_case,
    print_summary,
    print_table,
    table_rows,
    warnings_as_notes,
)
from medseg.cli_parser import build_parser
from medseg.cli_workflow import cmd_cv_report, cmd_ensemble, cmd_plan, cmd_train_folds, planned_config
from medseg.engine.runtime import apply_command_settings
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from medseg.config import Config

PROFILE_MAX_PIXELS = 16384 * 16384  # the largest image side that data.size accepts, squared


def _overrides(args: argparse.Namespace) -> list[str]:
    sets = []
    pairs = [
        ("data", "data.root"),
        ("model", "model.name"),
        ("loss", "loss.name"),
        ("epochs", "train.epochs"),
        ("batch_size", "train.batch_size"),
        ("lr", "optim.lr"),
        ("amp", "train.amp"),
        ("device", "train.device"),
        ("seed", "train.seed"),
        ("out", "output_dir"),
        ("init", "model.init_from"),
    ]
    for attr, key in pairs:
        value = getattr(args, attr, None)
        if value is not None:
            sets.append(f"{key}={json.dumps(str(value)) if isinstance(value, Path) else value}")
    if getattr(args, "size", None):
        sets.append(f"data.size=[{args.size[0]},{args.size[1]}]")
    if getattr(args, "budget", None):
        sets.append(f"train.budget_minutes={parse_budget(args.budget):.6g}")
    if getattr(args, "precision", None):  # --precision fp32|bf16 is train.amp none|bf16
        if getattr(args, "amp", None) not in (None, "none" if args.precision == "fp32" else args.precision):
            raise MedsegError(f"--precision {args.precision} contradicts --amp {args.amp}; give one")
        sets.append(f"train.amp={'none' if args.precision == 'fp32' else args.precision}")
    if getattr(args, "compile", False):
        sets.append("train.compile=true")
    _refuse_conflicts(sets, list(args.overrides))
    return sets + list(args.overrides)


def _refuse_conflicts(shortcuts: list[str], overrides: list[str]) -> None:
    """``--epochs 1 --set train.epochs=2`` is refused: which one was meant is not ours to guess."""
    from medseg.config import parse_override  # deferred: pydantic and YAML

    given = {tuple(parse_override(s)[0]): parse_override(s)[1] for s in shortcuts}
    for item in overrides:
        key, value = parse_override(item)
        if tuple(key) in given and given[tuple(key)] != value:
            raise MedsegError(
                f"--set {item} contradicts the option given for {'.'.join(key)} "
                f"({given[tuple(key)]!r}); give it once"
            )


def _refuse_fp16_on_cpu(cfg: Config) -> None:
    """Checked before the run folder, the data or the model exist (the trainer would fail later)."""
    if cfg.train.amp != "fp16":
        return
    import torch  # deferred: only a fp16 run needs to know whether CUDA is there

    device = cfg.train.device
    if device in ("cpu", "mps") or not torch.cuda.is_available():
        where = "CUDA is not available here" if device not in ("cpu", "mps") else f"device is {device}"
        raise MedsegError(f"train.amp=fp16 needs a CUDA device ({where}); use --amp bf16 on CPU")


def _refuse_compile_without_compiler(wanted: bool, device: str) -> None:
    """``--compile`` on a CPU without a C++ compiler: one line before the run folder or the data exist."""
    if not wanted:
        return
    from medseg.engine.compile import require_compiler  # deferred: torch
    from medseg.engine.device import resolve_device

    require_compiler(resolve_device(device))


def _config(args: argparse.Namespace) -> Config:
    return medseg.load_config(args.config, _overrides(args))


def _plans(args: argparse.Namespace) -> bool:
    """Whether ``train`` plans from the data: ``--plan auto``, or ``--data`` without ``-c`` (a user
    who gives only the data gets the plan, not built-in values fitted to no dataset)."""
    if args.plan is not None:
        return args.plan == "auto"
    return args.data is not None and args.config is None


def cmd_train(args: argparse.Namespace) -> int:
    cfg, announce = planned_config(args, _overrides(args)) if _plans(args) else (_config(args), None)
    _refuse_fp16_on_cpu(cfg)
    _refuse_compile_without_compiler(cfg.train.compile, cfg.train.device)
    if args.fold is not None:
        if announce is not None:
            announce()
        return cmd_train_folds(args, cfg)
    result = medseg.train(
        cfg,
        resume=args.resume,
        overwrite=args.overwrite,
        evaluate_split="test" if args.evaluate else None,
        on_ready=announce,
    )
    if result["rank"] != 0:
        return 0
    best = result["best_val_dice"]
    notes_console().print(
        f"[green]done[/] ({result['stop_reason']}): best validation Dice "
        f"{'n/a' if best is None else f'{best:.4f}'}; checkpoint {result['checkpoint']}"
    )
    if not args.no_postprocess:
        from medseg.engine.cross_val import decide_on_validation  # deferred: torch

        decide_on_validation(result["checkpoint"], result["out_dir"], log=notes_console().print)
    if args.evaluate:
        print_summary(medseg.evaluate(result["checkpoint"], split="test"))
    return 0


def _check_device_and_window(args: argparse.Namespace) -> None:
    from medseg.config import check_device  # deferred: pydantic

    check_device(args.device)
    if args.window and min(args.window) < 1:
        raise MedsegError(f"--window {args.window[0]} {args.window[1]}: sizes must be positive")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_device_and_window(args)
    overrides = list(args.overrides)
    if args.window:
        overrides.append(f"eval.window=[{args.window[0]},{args.window[1]}]")
    if args.hd_combine:
        overrides.append(f"eval.hd_combine={args.hd_combine}")
    result = medseg.evaluate(
        args.checkpoint,
        overrides=overrides,
        data_root=args.data,
        split=args.split,
        out_dir=args.out,
        device=args.device,
        tta=args.tta,
        crf=args.crf or None,
        postprocess=not args.no_postprocess,
    )
    if args.per_case:
        print_per_case(result["records"])
    print_summary(result)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _check_device_and_window(args)
    overrides = list(args.overrides)
    if args.window:
        overrides.append(f"eval.window=[{args.window[0]},{args.window[1]}]")
    overrides += [f"eval.precision={args.precision}"] if args.precision else []
    overrides += ["eval.compile=true"] if args.compile else []
    _refuse_compile_without_compiler(args.compile, args.device)
    written = medseg.predict(
        args.checkpoint,
        args.input,
        args.out,
        overrides=overrides,
        device=args.device,
        tta=args.tta,
        crf=args.crf or None,
        overlays=not args.no_overlays,
        overwrite=args.overwrite,
        save_probabilities=args.save_probabilities,
        postprocess=not args.no_postprocess,
    )
    notes_console().print(
        f"wrote {written['count']} predictions to {written['masks']}"
        + (f", overlays in {written['overlays']}" if written.get("overlays") else "")
    )
    for note in written.get("notes") or ():
        notes_console().print(note)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    # deferred: numpy, PIL and the image readers of the data layer
    from medseg.data.fingerprint import fingerprint, fingerprint_table, save_fingerprint

    cfg = _config(argparse.Namespace(**{**vars(args), "data": args.data_root}))
    fp = fingerprint(cfg.data)
    if args.json is not None and str(args.json) == "-":  # the fingerprint itself is the answer
        print(json.dumps(fp, indent=2))
    else:
        print_table(fingerprint_table(fp))
    if args.json is not None and str(args.json) != "-":  # written only when asked, never by default
        save_fingerprint(fp, args.json)
        print(f"fingerprint saved to {args.json}", file=sys.stderr)
    if fp["problems"]:  # a non-zero exit, so that `medseg info` can gate a pipeline
        print(f"medseg: {len(fp['problems'])} problem(s) found in {cfg.data.root}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    tables = []
    if args.what in ("models", "all"):
        tables.append(("models", models_table()))
    if args.what in ("losses", "all"):
        tables.append(("losses", losses_table()))
    if args.json:
        rows = {name: table_rows(t, header=True) for name, t in tables}
        print(
            json.dumps({name: [dict(zip(r[0], row)) for row in r[1:]] for name, r in rows.items()}, indent=2)
        )
        return 0
    for _, table in tables:
        print_table(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from medseg.metrics import compare_runs  # deferred: SciPy and matplotlib

    out = args.out or Path(args.run_b) / f"compare_vs_{Path(args.run_a).name}"
    result = compare_runs(args.run_a, args.run_b, out, metric=args.metric)
    notes_console().print_json(json.dumps(result, default=str))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from medseg.engine.score import score_folders  # deferred: torch-free but SciPy-heavy scoring

    result = score_folders(
        args.pred,
        args.gt,
        args.out or Path(args.pred) / "score",
        num_classes=args.num_classes,
        class_names=args.class_names.split(",") if args.class_names else None,
        regions=args.regions,
        spacing=[float(v) for v in args.spacing.split(",")] if args.spacing else None,
        empty=args.empty,
        hd_combine=args.hd_combine,
        nsd_tolerance=args.nsd_tolerance,
        postprocess=args.postprocess,
        allow_missing=args.allow_missing,
        plots=not args.no_plots,
    )
    from medseg.metrics import summary_table  # deferred: SciPy (the metrics package)

    # the scores are the answer: stdout, plain rows when piped; the report's place goes to stderr
    print_table(summary_table(result["summary"], metrics=["dice", "iou", "hd95", "assd", "nsd"]))
    meta = result["meta"]
    if "regions" in meta:  # which definition the numbers belong to
        shown = "; ".join(f"{n}=" + ",".join(map(str, v)) for n, v in meta["regions"].items())
        notes_console().print(f"regions {shown} (from {meta['regions_from']})", markup=False)
    notes_console().print(f"report: {args.out or Path(args.pred) / 'score'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from medseg.engine.demo import run_demo  # deferred: torch

    run_demo(Path(args.out), epochs=args.epochs, kind=args.kind)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medseg.export import export_checkpoint, format_report  # deferred: torch (and onnx)

    result = export_checkpoint(
        args.checkpoint,
        args.out,
        format=args.format,
        size=tuple(args.size) if args.size else None,
        opset=args.opset,
        atol=args.atol,
    )
    notes_console().print(format_report(result))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import yaml  # deferred: only this command parses YAML values itself

    from medseg.engine.profiler import profile_model, profile_table  # deferred: torch

    for name, values in (("--batch", [args.batch]), ("--size", args.size), ("--steps", [args.steps])):
        if min(values) < 1:
            raise MedsegError(f"{name} {' '.join(map(str, values))}: must be positive")
    if args.size[0] * args.size[1] > PROFILE_MAX_PIXELS:
        raise MedsegError(f"--size {args.size[0]} {args.size[1]}: larger than {PROFILE_MAX_PIXELS} pixels")
    if args.device is not None:
        from medseg.config import check_device  # deferred: pydantic

        check_device(args.device)
    options = {}
    for item in args.option:
        if "=" not in item:
            raise MedsegError(f"--option {item!r}: expected key=value, e.g. base_width=32")
        key, value = item.split("=", 1)
        options[key] = yaml.safe_load(value)
    results = [
        profile_model(
            name,
            size=tuple(args.size),
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            batch=args.batch,
            device=args.device,
            options=options,
            steps=args.steps,
            train=not args.no_train,
            amp=args.amp or args.precision == "bf16",
            memory_format=args.memory_format,
            fuse=not args.no_fuse,
            compile=args.compile,
        )
        for name in args.model.split(",")
    ]
    notes_console().print(profile_table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2, default=str))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from medseg.benchmark.runner import run_benchmark  # deferred: torch (training every cell)
    from medseg.benchmark.tables import to_rich

    console = notes_console()
    result = run_benchmark(
        args.out,
        models=args.models,
        losses=args.losses,
        config=args.config,
        data=args.data,
        budget=args.budget,
        epochs=args.epochs,
        folds=args.folds,
        seed=args.seed,
        overrides=args.overrides,
        workers=args.workers,
        devices=args.devices.split(",") if args.devices else None,
        profile=not args.no_profile,
        log=console.print,
    )
    if result.get("report"):
        console.print(to_rich(result["report"]["board"]))
        if "oof_board" in result["report"]:
            console.print("cross-validated (out-of-fold validation cases, each once):")
            console.print(to_rich(result["report"]["oof_board"]))
        console.print(f"report: {args.out}")
    if result.get("failed"):
        for name, err in result["failed"].items():
            console.print(f"[red]cell {name} failed:[/] {err}")
        return 1
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "info": cmd_info,
    "list": cmd_list,
    "compare": cmd_compare,
    "score": cmd_score,
    "cv-report": cmd_cv_report,
    "demo": cmd_demo,
    "export": cmd_export,
    "profile": cmd_profile,
    "benchmark": cmd_benchmark,
    "plan": cmd_plan,
    "ensemble": cmd_ensemble,
}
# the commands that run networks (and import torch anyway): they flush subnormal floats
NETWORK_COMMANDS = frozenset(
    {"train", "evaluate", "predict", "demo", "export", "profile", "benchmark", "ensemble"}
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # a real command-line run, not a call from Python code
        apply_command_settings(runs_networks=args.command in NETWORK_COMMANDS)
    try:
        with warnings_as_notes(enabled=not args.debug):
            return int(COMMANDS[args.command](args) or 0)
    except MedsegError as exc:
        if args.debug:
            raise
        print(f"medseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
