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
from typing import TYPE_CHECKING, Any

import medseg
from medseg.atomic import atomic_write_text
from medseg.budget import parse_budget
from medseg.engine.runtime import tune_glibc_malloc
from medseg.errors import MedsegError

if TYPE_CHECKING:
    from rich.console import Console

    from medseg.config import Config

PROFILE_MAX_PIXELS = 16384 * 16384  # the largest image side that data.size accepts, squared
EPILOG = "Docs: README.md and docs/ in the project. Model and loss names: `medseg list`."


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=100)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run options (shortcuts for --set)")
    g.add_argument("--config", "-c", type=Path, help="YAML preset, e.g. configs/unet_ph2.yaml")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.epochs=5 --set data.size=[128,128] "
        "(repeatable; values are YAML)",
    )
    g.add_argument("--data", type=Path, help="dataset folder (data.root)")
    g.add_argument("--model", help="model name (model.name), see `medseg list models`")
    g.add_argument("--loss", help="loss name or weighted sum, e.g. dice_ce or 'dice:1+focal:0.5' (loss.name)")
    g.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    g.add_argument("--batch-size", type=int, help="batch size (train.batch_size)")
    g.add_argument("--lr", type=float, help="peak learning rate (optim.lr)")
    g.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="training size (data.size)")
    g.add_argument("--budget", help="wall-time budget: minutes, or 90s, 10m, 1.5h (train.budget_minutes)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision (train.amp)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N (train.device)")
    g.add_argument("--seed", type=int, help="random seed (train.seed)")
    g.add_argument("--out", type=Path, help="run folder (output_dir)")


def _console() -> Console:
    # deferred: rich's console costs about 0.1 s, as much as the rest of `medseg --help`
    from medseg.engine.progress import console

    return console


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


def _config(args: argparse.Namespace) -> Config:
    return medseg.load_config(args.config, _overrides(args))


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _refuse_fp16_on_cpu(cfg)
    result = medseg.train(
        cfg,
        resume=args.resume,
        overwrite=args.overwrite,
        evaluate_split="test" if args.evaluate else None,
    )
    if result["rank"] != 0:
        return 0
    best = result["best_val_dice"]
    _console().print(
        f"[green]done[/] ({result['stop_reason']}): best validation Dice "
        f"{'n/a' if best is None else f'{best:.4f}'}; checkpoint {result['checkpoint']}"
    )
    if args.evaluate:
        _print_summary(medseg.evaluate(result["checkpoint"], split="test"))
    return 0


def _print_summary(result: dict) -> None:
    from medseg.metrics import summary_table  # deferred: SciPy (the metrics package)

    console = _console()
    console.print(
        summary_table(
            result["summary"], metrics=["dice", "iou", "sensitivity", "precision", "hd95", "assd", "nsd"]
        )
    )
    if "paths" in result:
        console.print(f"report: {result['out_dir']}")


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
    result = medseg.evaluate(
        args.checkpoint,
        overrides=overrides,
        data_root=args.data,
        split=args.split,
        out_dir=args.out,
        device=args.device,
        tta=args.tta or None,
        crf=args.crf or None,
    )
    if args.per_case:
        _print_per_case(result["records"])
    _print_summary(result)
    return 0


def _print_per_case(records: list[dict]) -> None:
    from rich.table import Table  # deferred: rich (see _console)

    table = Table(title="per-case Dice")
    classes = list(dict.fromkeys(r["class"] for r in records))
    table.add_column("case")
    for c in classes:
        table.add_column(c, justify="right")
    by_case: dict[str, dict[str, float]] = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["class"]] = r["dice"]
    for case, vals in by_case.items():
        table.add_row(case, *(f"{vals.get(c, float('nan')):.4f}" for c in classes))
    _console().print(table)


def cmd_predict(args: argparse.Namespace) -> int:
    _check_device_and_window(args)
    overrides = list(args.overrides)
    if args.window:
        overrides.append(f"eval.window=[{args.window[0]},{args.window[1]}]")
    written = medseg.predict(
        args.checkpoint,
        args.input,
        args.out,
        overrides=overrides,
        device=args.device,
        tta=args.tta,
        crf=args.crf,
        overlays=not args.no_overlays,
        overwrite=args.overwrite,
    )
    _console().print(
        f"wrote {written['count']} predictions to {written['masks']}"
        + (f", overlays in {written['overlays']}" if written.get("overlays") else "")
    )
    return 0


def _print_table(table: Any) -> None:
    """The answer of ``list`` / ``info``: to stdout; a rich table on a terminal, else plain
    tab-separated rows (header first, markup stripped, never wrapped), as ``pip list`` does."""
    if sys.stdout.isatty():
        from rich.console import Console  # deferred: rich (see _console)

        Console().print(table)
        return
    for row in [list(r) for r in _table_rows(table, header=True)]:
        print("\t".join(" ".join(cell.split()) for cell in row))  # one row per line, whatever a cell holds


def _table_rows(table: Any, header: bool = False) -> list[list[str]]:
    """A rich table's cells as plain text (markup stripped), the header row first if asked."""
    from rich.text import Text  # deferred: rich (see _console)

    def plain(cell: Any) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    columns = list(table.columns)
    rows = [[plain(c.header) for c in columns]] if header else []
    return rows + [[plain(cell) for cell in row] for row in zip(*(list(c.cells) for c in columns))]


def cmd_info(args: argparse.Namespace) -> int:
    # deferred: numpy, PIL and the image readers of the data layer
    from medseg.data.fingerprint import fingerprint, fingerprint_table, save_fingerprint

    cfg = _config(argparse.Namespace(**{**vars(args), "data": args.data_root}))
    fp = fingerprint(cfg.data)
    _print_table(fingerprint_table(fp))
    if args.json:  # written only when asked: never into the current or the dataset folder
        save_fingerprint(fp, args.json)
        print(f"fingerprint saved to {args.json}", file=sys.stderr)
    if fp["problems"]:  # a non-zero exit, so that `medseg info` can gate a pipeline
        print(f"medseg: {len(fp['problems'])} problem(s) found in {cfg.data.root}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    tables = []
    if args.what in ("models", "all"):
        tables.append(("models", _models_table()))
    if args.what in ("losses", "all"):
        tables.append(("losses", _losses_table()))
    if args.json:
        rows = {name: _table_rows(t, header=True) for name, t in tables}
        print(
            json.dumps({name: [dict(zip(r[0], row)) for row in r[1:]] for name, r in rows.items()}, indent=2)
        )
        return 0
    for _, table in tables:
        _print_table(table)
    return 0


def _models_table() -> Any:
    # deferred: torch (the model zoo); rich.table loads with the console (see _console)
    import torch
    from rich.table import Table

    from medseg.models import MODELS, count_parameters

    table = Table(title="models (parameters with in_channels=3, num_classes=2, default options)")
    for col in ("name", "parameters", "input multiple", "summary", "paper"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for entry in MODELS:
        try:  # meta tensors: count parameters without allocating them
            with torch.device("meta"):
                model = entry.build(in_channels=3, num_classes=2)
        except (NotImplementedError, RuntimeError, MedsegError):
            model = entry.build(in_channels=3, num_classes=2)
        table.add_row(
            entry.name,
            f"{count_parameters(model) / 1e6:.2f} M",
            str(model.input_multiple),
            entry.meta.get("summary", ""),
            entry.meta.get("paper", ""),
        )
    return table


def _losses_table() -> Any:
    # deferred: torch (the loss zoo); rich.table loads with the console (see _console)
    from rich.table import Table

    from medseg.losses import LOSSES

    table = Table(title="losses")
    for col in ("name", "aliases", "summary", "paper"):
        table.add_column(col)
    for entry in LOSSES:
        table.add_row(
            entry.name,
            ", ".join(LOSSES.aliases_of(entry.name)),
            entry.meta.get("summary", ""),
            entry.meta.get("paper", ""),
        )
    return table


def cmd_compare(args: argparse.Namespace) -> int:
    from medseg.metrics import compare_runs  # deferred: SciPy and matplotlib

    out = args.out or Path(args.run_b) / f"compare_vs_{Path(args.run_a).name}"
    result = compare_runs(args.run_a, args.run_b, out, metric=args.metric)
    _console().print_json(json.dumps(result, default=str))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from medseg.engine.score import score_folders  # deferred: torch-free but SciPy-heavy scoring

    result = score_folders(
        args.pred,
        args.gt,
        args.out or Path(args.pred) / "score",
        num_classes=args.num_classes,
        class_names=args.class_names.split(",") if args.class_names else None,
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
    _print_table(summary_table(result["summary"], metrics=["dice", "iou", "hd95", "assd", "nsd"]))
    _console().print(f"report: {args.out or Path(args.pred) / 'score'}")
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
    _console().print(format_report(result))
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
            amp=args.amp,
            memory_format=args.memory_format,
            fuse=not args.no_fuse,
        )
        for name in args.model.split(",")
    ]
    _console().print(profile_table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2, default=str))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from medseg.benchmark.runner import run_benchmark  # deferred: torch (training every cell)
    from medseg.benchmark.tables import to_rich

    console = _console()
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
        console.print(f"report: {args.out}")
    if result.get("failed"):
        for name, err in result["failed"].items():
            console.print(f"[red]cell {name} failed:[/] {err}")
        return 1
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        formatter_class=_formatter,
        epilog=EPILOG,
        description="Medical image segmentation: train, evaluate and compare models and losses.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"medseg {medseg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        formatter_class=_formatter,
        help="train and evaluate a small U-Net on built-in phantoms",
        description="Generate phantom data, train a small U-Net, evaluate it, and print where the "
        "report, checkpoint and overlays are. Needs no download; a few minutes on 2 cores.",
    )
    p.add_argument("--out", default="outputs/demo", help="run folder (default: outputs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")
    p.add_argument(
        "--kind",
        choices=["binary", "multiclass"],
        default="binary",
        help="binary lesions or multi-class organs (default: binary)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        formatter_class=_formatter,
        help="train a model",
        description="Train a model from a YAML preset and/or command-line options. Checkpoints "
        "(safetensors) are written atomically every epoch; --resume continues exactly.\n"
        "Under torchrun the same command trains with DistributedDataParallel.",
        epilog="example: medseg train -c configs/unet_ph2.yaml --epochs 20 --out runs/ph2",
    )
    _add_run_options(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from OUT/checkpoints/last.safetensors (or the given checkpoint)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (a used folder is refused without --resume or --overwrite)",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="fine-tune from this checkpoint: every tensor that fits is loaded, the rest re-initialised",
    )
    p.add_argument(
        "--evaluate", action="store_true", help="evaluate the best checkpoint on the test split after"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        formatter_class=_formatter,
        help="evaluate a checkpoint",
        description="Evaluate a checkpoint on its test (or val) split, or on another folder: "
        "per-case x per-class CSV/JSON, summary table, plots and overlays.",
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by medseg train")
    p.add_argument("--data", type=Path, help="evaluate on this folder instead of the training data's split")
    p.add_argument("--split", default="test", choices=["test", "val"], help="split of the training data")
    p.add_argument("--out", type=Path, help="report folder (default: RUN/eval/SPLIT)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding-window inference size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--per-case", action="store_true", help="print the per-case Dice table")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. eval.empty=legacy",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        formatter_class=_formatter,
        help="segment new images or volumes",
        description="Segment a folder, an image or a volume. Masks are written at the original size: "
        "PNG (binary 0/255, multi-class class indices) or NIfTI with the input's geometry.",
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    p.add_argument(
        "input", type=Path, help="image file, folder of images, NIfTI/HDF5 volume or folder of them"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding-window inference size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write even into the inputs' own data set or over existing masks",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "info",
        formatter_class=_formatter,
        help="dataset fingerprint",
        description="Counts, sizes, channels, intensity statistics, class frequencies, empty masks "
        "and spacing of a dataset, printed on stdout (saved as JSON with --json PATH). Exits 1 when "
        "problems are listed (e.g. a mask whose size does not match its image).",
    )
    p.add_argument("data_root", type=Path, help="dataset folder")
    p.add_argument("--config", "-c", type=Path, help="YAML preset whose data section describes the dataset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override data fields, e.g. data.mask_threshold=128",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also save the fingerprint as JSON to PATH")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "list",
        formatter_class=_formatter,
        help="list models and losses",
        description="Models and losses, on stdout: a table on a terminal, tab-separated rows "
        "when piped (e.g. `medseg list models | grep unet`), or JSON with --json.",
    )
    p.add_argument("what", nargs="?", default="all", choices=["models", "losses", "all"])
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "compare",
        formatter_class=_formatter,
        help="paired comparison of two evaluations",
        description="Per-case paired differences of two evaluation folders with a Wilcoxon "
        "signed-rank test, an effect size and a plot.",
    )
    p.add_argument("run_a", type=Path, help="evaluation folder A (RUN/eval/test)")
    p.add_argument("run_b", type=Path, help="evaluation folder B")
    p.add_argument("--metric", default="dice", help="metric to compare (default: dice)")
    p.add_argument("--out", type=Path, help="output folder")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "score",
        formatter_class=_formatter,
        help="score a folder of existing predictions against references",
        description="Score predictions (PNG, TIFF, NIfTI, HDF5, npz, npy; nnU-Net and MONAI output "
        "folders included) against reference label maps, matched by name, with the same per-case / "
        "per-class report as `medseg evaluate`. Spacing comes from the files unless --spacing is given.",
    )
    p.add_argument("pred", type=Path, help="folder of predicted label maps")
    p.add_argument(
        "gt", type=Path, help="folder of reference label maps (or a dataset with masks/ or labelsTr/)"
    )
    p.add_argument("--out", type=Path, help="report folder (default: PRED/score)")
    p.add_argument("--num-classes", type=int, help="number of classes incl. background")
    p.add_argument("--class-names", help="comma-separated class names incl. background")
    p.add_argument("--spacing", help="voxel size per array axis, comma-separated (overrides the files)")
    p.add_argument("--empty", default="nan", help="empty-case policy for distances (as evaluate)")
    p.add_argument(
        "--hd-combine", choices=["max", "pooled"], default="max", help="HD95 of the two directions"
    )
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance (spacing units)")
    p.add_argument("--postprocess", type=Path, help="post-processing plan (JSON) applied first")
    p.add_argument("--allow-missing", action="store_true", help="score the pairs found, list the rest")
    p.add_argument("--no-plots", action="store_true", help="skip the report figures")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "benchmark",
        formatter_class=_formatter,
        help="train and rank models x losses",
        description="Train every model x loss cell under the same budget and seed, evaluate on the "
        "held-out split, and write a leaderboard (Markdown, CSV, HTML), paired "
        "Wilcoxon statistics against the best cell and plots. Resumable: a killed "
        "benchmark skips finished cells when started again.",
        epilog="example: medseg benchmark --data ../shared/data/ph2 --models unet,deeplabv3plus,"
        "befunet_small --losses dice_ce,focal_tversky,lovasz_hinge --budget 10m --out runs/b",
    )
    p.add_argument("--models", required=True, help="comma list; options as name:key=value:key=value")
    p.add_argument("--losses", required=True, help="comma list of loss names or weighted sums")
    p.add_argument("--data", type=Path, help="dataset folder (data.root of every cell)")
    p.add_argument("--config", "-c", type=Path, help="base YAML preset of every cell")
    p.add_argument("--budget", help="training wall time per cell: minutes, or 90s, 10m, 1.5h")
    p.add_argument("--epochs", type=int, help="epochs per cell (with or instead of --budget)")
    p.add_argument("--folds", type=int, help="K-fold cross-validation (or K repeated hold-out splits)")
    p.add_argument("--seed", type=int, default=0, help="seed shared by every cell")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--devices", help="comma list of devices, one cell per device, e.g. cuda:0,cuda:1")
    p.add_argument("--no-profile", action="store_true", help="skip the speed/FLOPs columns")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields of every cell",
    )
    p.add_argument("--out", type=Path, required=True, help="benchmark folder")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser(
        "profile",
        formatter_class=_formatter,
        help="parameters, FLOPs, speed and memory of models",
        description="Parameters, FLOPs (torch.utils.flop_counter), measured training and inference "
        "throughput and peak memory on the current device.",
    )
    p.add_argument("model", help="model name, or a comma list")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"), help="input size")
    p.add_argument("--batch", type=int, default=2, help="batch size")
    p.add_argument("--in-channels", type=int, default=3, help="input channels")
    p.add_argument("--num-classes", type=int, default=2, help="output classes")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU)")
    p.add_argument("--no-train", action="store_true", help="inference only")
    p.add_argument(
        "--memory-format",
        default="auto",
        choices=["auto", "channels_last", "contiguous"],
        help="auto: the model's preferred format, as medseg trains and infers",
    )
    p.add_argument("--no-fuse", action="store_true", help="time inference without Conv-BN folding")
    p.add_argument("--json", type=Path, help="also save the results as JSON")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "export",
        formatter_class=_formatter,
        help="export a checkpoint to ONNX or TorchScript",
        description="Export with dynamic batch/height/width where the model allows it, run the "
        "exported model and compare it with PyTorch; the difference and tolerance "
        "are printed.",
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", type=Path, help="output file (default: next to the checkpoint)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="example input size")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference allowed in the check")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # a real command-line run, not a call from Python code
        tune_glibc_malloc()
    try:
        return int(args.func(args) or 0)
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
