"""The public Python API: build models, losses and data, train, evaluate and predict.

``import medseg`` exposes these functions with their real signatures and documentation. Each
one imports the layer that does the work (models, losses, data, engine: all of them torch)
when it is first called, so ``import medseg`` and the ``medseg`` command's start-up stay
cheap; every deferred import below says so. The functions are thin: the implementations
live in :mod:`medseg.models`, :mod:`medseg.losses`, :mod:`medseg.data`, :mod:`medseg.config`
and :mod:`medseg.engine`, and the tests check that the signatures here match theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing these at run time would load torch
    from torch import nn

    from medseg.config import Config
    from medseg.data import AugmentConfig, DataBundle, DataConfig
    from medseg.models import SegmentationModel


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    **options: Any,
) -> SegmentationModel:
    """Build the registered model ``name`` (see :func:`list_models`), e.g.
    ``build_model("befunet_small", 3, 9, img_size=224)``.

    ``options`` are the model's keyword options (``medseg list models``; an unknown option
    raises :class:`~medseg.errors.ConfigError` naming the valid ones). ``weights``: a local
    file to initialise from (a medseg checkpoint, a safetensors file or a torch state dict;
    nothing is ever downloaded); without it the model is randomly initialised.
    Logits come back as ``[B, num_classes, H, W]`` at the input size.
    """
    from medseg.models import build_model as build  # deferred: torch

    return build(name, in_channels, num_classes, weights=weights, **options)


def build_loss(
    spec: str,
    *,
    mode: str = "multiclass",
    aux_weight: float | None = None,
    deep_supervision: bool = False,
    regions: Sequence[Sequence[int]] | None = None,
    **options: Any,
) -> nn.Module:
    """Build a loss from a registered name (see :func:`list_losses`) or a weighted sum,
    e.g. ``build_loss("dice_ce", mode="binary")`` or ``build_loss("dice:1+focal:0.5")``.

    ``mode``: ``binary`` (one sigmoid output), ``multiclass`` (softmax) or ``multilabel``.
    ``options`` go to every term that accepts them; ``"focal.gamma"`` to one term only.
    ``aux_weight`` adds an auxiliary-head term (PSPNet, Zhao et al. 2017) and
    ``deep_supervision`` a deep-supervision wrapper. ``regions`` (label sets, with
    ``mode="multilabel"``): the loss takes label maps and scores one sigmoid channel per region
    (nnU-Net's region-based training). The loss is called as ``loss(logits, target, **extras)``.
    """
    from medseg.losses import build_loss as build  # deferred: torch

    return build(
        spec, mode=mode, aux_weight=aux_weight, deep_supervision=deep_supervision, regions=regions, **options
    )


def list_models() -> list[str]:
    """Names of the registered models (``medseg list models`` shows their options and papers)."""
    from medseg.models import list_models as names  # deferred: torch

    return names()


def list_losses() -> list[str]:
    """Names of the registered losses (aliases such as ``bce`` and ``jaccard`` not included)."""
    from medseg.losses import list_losses as names  # deferred: torch

    return names()


def load_config(
    source: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Load and validate a run configuration: a YAML file (e.g. ``configs/unet_ph2.yaml``), a
    dict, or ``None`` for the defaults, then ``overrides`` such as ``"train.epochs=5"``.
    Bad keys or values raise :class:`~medseg.errors.ConfigError` naming the key."""
    from medseg.config import load_config as load  # deferred: pydantic

    return load(dict(source) if isinstance(source, Mapping) else source, tuple(overrides))


def build_data(
    cfg: DataConfig,
    aug: AugmentConfig | None = None,
    *,
    seed: int = 0,
    extra_targets: tuple[str, ...] = (),
    target_options: Mapping[str, Mapping] | None = None,
) -> DataBundle:
    """Build the training, validation and test datasets described by ``cfg`` (``config.data``),
    augmented as ``aug`` says (``config.augment``). ``extra_targets`` ("weight_map", "edge")
    add per-sample targets derived from the augmented mask, with keyword arguments from
    ``target_options``. Files are validated as they are opened: a bad one raises
    :class:`~medseg.errors.DataError` naming it."""
    from medseg.data import build_data as build  # deferred: torch, PIL and the readers

    return build(cfg, aug, seed=seed, extra_targets=extra_targets, target_options=target_options)


def train(
    cfg: Config,
    *,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    evaluate_split: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict:
    """Train the run ``cfg`` (see :func:`load_config`) into ``cfg.output_dir``: checkpoints
    written atomically every epoch, the training log, curves and the configuration.
    ``resume=True`` continues from the run's last checkpoint (or from the given checkpoint)
    exactly. Returns ``best_val_dice``, ``checkpoint`` (the best one), ``history``,
    ``stop_reason`` and ``rank``. Under ``torchrun`` each process calls it (DDP). A folder
    holding a previous run is refused unless ``resume`` or ``overwrite``; one training at a time
    writes into a folder (it is locked). ``evaluate_split``: the split evaluated afterwards,
    refused before training when it is empty. ``on_ready``: called once the data were read and
    checked, before anything is written."""
    from medseg.engine.trainer import train as run  # deferred: torch

    return run(cfg, resume=resume, overwrite=overwrite, evaluate_split=evaluate_split, on_ready=on_ready)


def evaluate(
    checkpoint: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    data_root: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    crf: bool | None = None,
    postprocess: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` on the ``split`` ("test" or "val") of its training data, or on
    the folder ``data_root``: per-case x per-class metrics (Dice, IoU, HD95, ASSD, NSD, ...),
    a summary, plots and overlays written to ``out_dir`` (default ``RUN/eval/<split>``).
    ``tta`` / ``crf`` override the checkpoint's evaluation settings; ``postprocess`` applies the
    run's ``postprocessing.json`` when it has one. Returns ``records``, ``summary``, ``out_dir``
    and ``postprocessing`` (what was applied)."""
    from medseg.engine.evaluator import evaluate_checkpoint  # deferred: torch

    return evaluate_checkpoint(
        checkpoint,
        overrides=overrides,
        data_root=data_root,
        split=split,
        out_dir=out_dir,
        device=device,
        tta=tta,
        crf=crf,
        postprocess=postprocess,
    )


def predict(
    checkpoint: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "auto",
    tta: bool | None = None,
    crf: bool | None = None,
    overlays: bool = True,
    overwrite: bool = False,
    save_probabilities: bool = False,
    postprocess: bool = True,
) -> dict:
    """Segment an image, a volume or a folder of them with ``checkpoint``; masks are written
    to ``out_dir/masks`` at the input's own size and geometry (PNG: binary 0/255 or class
    indices; NIfTI for volumes), with overlay PNGs unless ``overlays=False``. Returns
    ``count``, ``masks`` and ``overlays`` (the folders written). File names are unique
    (``names.csv`` maps them to case ids when they differ); writing into the inputs' own tree
    or over existing masks is refused unless ``overwrite``. ``save_probabilities`` also writes each
    case's class probabilities to ``out_dir/probabilities`` (:mod:`medseg.engine.probabilities`).
    ``tta`` / ``crf`` override the checkpoint's evaluation settings (None: the run's ``eval.tta``
    / ``eval.crf``); ``postprocess``: apply the run's ``postprocessing.json`` when it has one."""
    from medseg.engine.predictor import predict_folder  # deferred: torch

    return predict_folder(
        checkpoint,
        inputs,
        out_dir,
        overrides=overrides,
        device=device,
        tta=tta,
        crf=crf,
        overlays=overlays,
        overwrite=overwrite,
        save_probabilities=save_probabilities,
        postprocess=postprocess,
    )
