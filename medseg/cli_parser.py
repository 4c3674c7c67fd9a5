"""The ``medseg`` command line's argument table (argparse); the handlers are in :mod:`medseg.cli`.

Each subcommand records its name in ``args.command``; :func:`medseg.cli.main` dispatches on it.
The module imports only the standard library and ``medseg`` itself, so ``medseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import medseg

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


def _add_speed_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--compile`` and ``--precision`` (docs/benchmarks.md: where each pays on CPU)."""
    p.add_argument(
        "--compile",
        action="store_true",
        help=f"torch.compile {what} (inductor; needs a C++ compiler on CPU; compile time is reported apart)",
    )
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], help=f"bf16: {what} under bfloat16 autocast (default fp32)"
    )


def _add_tta(p: argparse.ArgumentParser, whose: str = "") -> None:
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"test-time mirroring{whose} over the axes its training mirrored (default: the run's "
        "eval.tta, on in planned 2-D runs)",
    )


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
    p.set_defaults(command="demo")

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
        "--plan",
        choices=["auto", "none"],
        help="auto: plan the config from --data first (as `medseg plan DATA --budget B` does; 15 min "
        "without --budget), print the decisions, then train it; --set overrides any planned value. "
        "Default: auto when --data is given without -c, none (the config's or built-in values) otherwise",
    )
    p.add_argument(
        "--evaluate", action="store_true", help="evaluate the best checkpoint on the test split after"
    )
    p.add_argument(
        "--fold",
        metavar="K|all",
        help="K-fold cross-validation (data.split.folds, default 5): train fold K, or every fold one "
        "after the other, each in OUT/fold_K/; keeps out-of-fold predictions, decides the "
        "post-processing on them and (all) writes the cross-validation report",
    )
    p.add_argument(
        "--no-postprocess",
        action="store_true",
        help="after training, do not predict the validation cases to decide the post-processing "
        "(OUT/postprocessing.json, which predict and evaluate apply)",
    )
    _add_speed_options(p, "the training step")
    p.set_defaults(command="train")

    p = sub.add_parser(
        "cv-report",
        formatter_class=_formatter,
        help="cross-validation report of a --fold run",
        description="Per-fold and pooled out-of-fold Dice and HD95 per class, mean ± sd over folds: "
        "RUN/cv/cv_report.json, cv_report.md and cv_box.png; the table is printed.",
    )
    p.add_argument("run", type=Path, help="the run folder of `medseg train --fold` (holds fold_K/)")
    p.add_argument("--out", type=Path, help="report folder (default: RUN/cv)")
    p.set_defaults(command="cv-report")

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
    _add_tta(p)
    p.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding-window inference size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--per-case", action="store_true", help="print the per-case Dice table")
    p.add_argument(
        "--hd-combine",
        choices=["max", "pooled"],
        help="how HD95 combines its two directions (eval.hd_combine)",
    )
    p.add_argument("--no-postprocess", action="store_true", help="do not apply the run's postprocessing.json")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. eval.empty=legacy",
    )
    p.set_defaults(command="evaluate")

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
    _add_tta(p)
    p.add_argument("--crf", action="store_true", help="dense-CRF post-processing")
    p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding-window inference size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--no-postprocess", action="store_true", help="do not apply the run's postprocessing.json")
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
    _add_speed_options(p, "the model")
    p.set_defaults(command="predict")

    p = sub.add_parser(
        "info",
        formatter_class=_formatter,
        help="dataset fingerprint",
        description="Counts, sizes, channels, intensity statistics, class frequencies, empty masks, "
        "spacing and, per volume, the slice axis 2D models use (data.slice_axis overrides it) of a "
        "dataset, printed on stdout (saved as JSON with --json PATH). Exits 1 when problems are "
        "listed (e.g. a mask whose size does not match its image).",
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
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also save the fingerprint as JSON to PATH; '-' prints it on stdout instead of the table",
    )
    p.set_defaults(command="info")

    p = sub.add_parser(
        "list",
        formatter_class=_formatter,
        help="list models and losses",
        description="Models and losses, on stdout: a table on a terminal, tab-separated rows "
        "when piped (e.g. `medseg list models | grep unet`), or JSON with --json.",
    )
    p.add_argument("what", nargs="?", default="all", choices=["models", "losses", "all"])
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(command="list")

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
    p.set_defaults(command="compare")

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
    p.add_argument(
        "--regions",
        help="score overlapping regions (label in region), as data.regions: inline "
        "'{wt: [1,2,3], tc: [2,3], et: [3]}' or 'wt=1,2,3;tc=2,3;et=3', a YAML/JSON file, a run "
        "folder or its config.yaml, an nnU-Net dataset.json; default: a region-based dataset.json "
        "beside GT; 'none' scores per class",
    )
    p.add_argument("--spacing", help="voxel size per array axis, comma-separated (overrides the files)")
    p.add_argument("--empty", default="nan", help="empty-case policy for distances (as evaluate)")
    p.add_argument(
        "--hd-combine", choices=["max", "pooled"], default="max", help="HD95 of the two directions"
    )
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance (spacing units)")
    p.add_argument("--postprocess", type=Path, help="post-processing plan (JSON) applied first")
    p.add_argument("--allow-missing", action="store_true", help="score the pairs found, list the rest")
    p.add_argument("--no-plots", action="store_true", help="skip the report figures")
    p.set_defaults(command="score")

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
    p.set_defaults(command="benchmark")

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
    _add_speed_options(p, "the timed steps")
    p.add_argument("--json", type=Path, help="also save the results as JSON")
    p.set_defaults(command="profile")

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
    p.set_defaults(command="export")
    _add_plan_and_ensemble(sub)
    return parser


def _add_plan_and_ensemble(sub: argparse._SubParsersAction) -> None:
    sub.choices["predict"].add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write each case's class probabilities (float16 npz) to OUT/probabilities",
    )
    p = sub.add_parser(
        "plan",
        formatter_class=_formatter,
        help="write a ready-to-train config decided from the data",
        description="Fingerprint a dataset and decide, by nnU-Net's rules fitted to a CPU time budget, "
        "2-D or 3-D, target spacing, patch and batch size, network depth, normalisation, loss and "
        "augmentation. Writes the config (YAML) and prints each decision with its reason.",
        epilog="example: medseg plan ../shared/data/ph2 --budget 15m --out plan.yaml && medseg train -c plan.yaml",
    )
    p.add_argument("data_root", type=Path, help="dataset folder")
    p.add_argument(
        "--out", type=Path, default=Path("plan.yaml"), help="config file to write (default: plan.yaml)"
    )
    p.add_argument(
        "--dims", choices=["auto", "2d", "3d"], default="auto", help="2-D or 3-D (default: decided)"
    )
    p.add_argument(
        "--budget", default="15m", help="CPU training time: minutes, or 90s, 10m, 1.5h (default 15m)"
    )
    p.add_argument("--config", "-c", type=Path, help="YAML preset whose data section describes the dataset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data options, e.g. data.format=nifti or data.mask_threshold=128",
    )
    p.add_argument("--json", action="store_true", help="print the decisions and config as JSON on stdout")
    p.set_defaults(command="plan")

    p = sub.add_parser(
        "ensemble",
        formatter_class=_formatter,
        help="average the probabilities of several models",
        description="Predict INPUT with every model (checkpoints, run folders, or runs of fold_k/ folders: "
        "all folds), average the class probabilities and write the labels. With --from-probabilities, "
        "average folders of probability files written by `predict --save-probabilities` instead.",
        epilog="examples: medseg ensemble runs/a runs/b data/images --out ens\n"
        "          medseg ensemble --from-probabilities p1 p2 --out ens",
    )
    p.add_argument("sources", nargs="+", type=Path, help="RUN_OR_CKPT... INPUT, or probability folders")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--from-probabilities", action="store_true", help="SOURCES are probability folders")
    _add_tta(p, " of every model")
    p.add_argument("--save-probabilities", action="store_true", help="also write the mean probabilities")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--overwrite", action="store_true", help="write into the inputs' tree or over masks")
    p.set_defaults(command="ensemble")
