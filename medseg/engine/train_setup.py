"""The setup phase of training: device and process group, data, task, loss, model, optimiser,
then (after a resume has loaded its weights) the wrapped network, the loader and the step
context. Each piece is a function of the configuration, built in a fixed order so that the
random state a run starts from is the same every time."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medseg.config import Config
from medseg.data import build_data
from medseg.engine.compile import compile_training_net
from medseg.engine.device import resolve_device
from medseg.engine.distributed import Distributed
from medseg.engine.progress import console
from medseg.engine.rng import seed_everything
from medseg.engine.sampler import BatchOrderSampler, EpochSampler
from medseg.engine.schedule import build_optimizer
from medseg.engine.task import IGNORE_INDEX, Task, make_task, spatial_dims
from medseg.engine.train_step import AuxForward, StepContext
from medseg.errors import MedsegError
from medseg.losses import build_loss, with_auxiliary
from medseg.models import MODELS, build_model
from medseg.models.base import SegmentationModel, to_preferred_format
from medseg.models.weights_file import load_matching_weights


@dataclass
class TrainParts:
    """What a run trains: built from the configuration before any resume."""

    cfg: Config
    dist: Distributed
    device: torch.device
    data: Any
    task: Task
    model: SegmentationModel
    loss_fn: Any
    optimizer: torch.optim.Optimizer
    model_state: dict

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"


@dataclass
class TrainLoop:
    """How a run iterates: loader, steps per epoch, schedule length and the step context."""

    sampler: EpochSampler | BatchOrderSampler
    loader: DataLoader
    steps_per_epoch: int
    max_steps: int
    warmup: int
    step: StepContext


def setup_device(cfg: Config) -> tuple[Distributed, torch.device]:
    """The process group (under torchrun) and this rank's device."""
    dist = Distributed()
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    dist.init(device)
    return dist, device


def resume_checkpoint_path(cfg: Config, resume: bool | str | Path) -> Path | None:
    """``--resume``: ``OUT/checkpoints/last.safetensors`` (True) or the given file; None when not resuming."""
    if not resume:
        return None
    path = Path(cfg.output_dir) / "checkpoints" / "last.safetensors" if resume is True else Path(resume)
    if not path.is_file():
        raise MedsegError(f"{path}: nothing to resume from (no checkpoint)")
    return path


def loss_needs(cfg: Config) -> tuple[str, ...]:
    """Which extra batch keys the loss consumes (asked before the data is built, so the
    pipeline computes weight maps / edge targets only when needed)."""
    modes = [cfg.loss.mode] if cfg.loss.mode != "auto" else ["multiclass", "binary"]
    error: Exception | None = None
    for mode in modes:  # some losses exist in one mode only (e.g. lovasz_hinge: binary)
        try:
            probe = build_loss(cfg.loss.name, mode=mode, ignore_index=IGNORE_INDEX, **cfg.loss.options)
            return tuple(getattr(probe, "needs", ()))
        except (MedsegError, ValueError) as exc:
            error = exc
    assert error is not None
    raise error


def check_input_size(cfg: Config, model: torch.nn.Module) -> None:
    """Valid-convolution models accept only some input sizes: refuse others with a suggestion."""
    margin = int(getattr(model, "output_margin", 0))
    if not margin:
        return
    valid: Any = model  # valid-convolution models (unet_valid) add output_size / valid_input_size
    for side in cfg.data.size:
        if valid.output_size(int(side)) is None:
            near = valid.valid_input_size(max(1, int(side) - 2 * margin))
            raise MedsegError(
                f"data.size {list(cfg.data.size)} is not a valid input of {cfg.model.name} "
                f"(valid convolutions); use e.g. data.size=[{near},{near}] "
                f"(output {valid.output_size(near)})"
            )


def add_auxiliary_loss(
    cfg: Config, loss_fn: Any, model: SegmentationModel, in_channels: int, device: torch.device
) -> Any:
    """Models with an auxiliary head (PSPNet) get its loss added at ``cfg.loss.aux_weight``."""
    if getattr(loss_fn, "uses_aux", False) or cfg.loss.aux_weight <= 0:
        return loss_fn
    with torch.no_grad():
        size = cfg.data.patch_size if cfg.data.patch_size is not None else cfg.data.size
        probe = torch.zeros(1, in_channels, *size, device=device)
        model.eval()
        _, aux = model.forward_aux(probe)
        model.train()
    return with_auxiliary(loss_fn, aux_weight=cfg.loss.aux_weight) if "aux" in aux else loss_fn


def medseg_version() -> str:
    """The installed medseg version (package metadata: the engine does not import the
    ``medseg`` facade above it), or ``unknown`` when running from an uninstalled tree."""
    try:
        return version("medseg")
    except PackageNotFoundError:
        return "unknown"


def model_state(cfg: Config, task: Task, in_channels: int) -> dict:
    """The JSON state every checkpoint of the run carries (how to rebuild the model)."""
    state = {
        "model_name": cfg.model.name,
        "model_options": dict(cfg.model.options),
        "in_channels": in_channels,
        "num_classes": task.num_classes,
        "out_channels": task.out_channels,
        "task_mode": task.mode,
        "class_names": list(task.class_names),
        "regions": [list(r) for r in task.regions],
        "region_names": list(task.region_names),
        "config": cfg.to_dict(),
        "medseg_version": medseg_version(),
    }
    if task.dims != 2:  # 2-D checkpoints keep their old metadata
        state["spatial_dims"] = task.dims
    return state


def init_from_weights(cfg: Config, model: torch.nn.Module) -> None:
    """``model.init_from``: load the fitting tensors of a weights file and say what was skipped."""
    if cfg.model.init_from is None:
        return
    loaded, skipped = load_matching_weights(model, cfg.model.init_from)
    line = f"initialised from {cfg.model.init_from}: {loaded} tensors loaded"
    if skipped:
        line += f"; {len(skipped)} skipped (the model's own initialisation kept): " + ", ".join(skipped)
    console.print(line)


def with_patch_topology(cfg: Config) -> Config:
    """A 3-D model that plans its topology from a patch (``unet3d``'s ``patch_size`` option) gets
    ``data.patch_size`` when its options do not name one, so the network fits the patches; the
    option is then part of the saved configuration and the checkpoint rebuilds the same network."""
    options = MODELS.get(cfg.model.name).option_names() or []
    if cfg.data.patch_size is None or "patch_size" not in options or "patch_size" in cfg.model.options:
        return cfg
    opts = {**cfg.model.options, "patch_size": list(cfg.data.patch_size)}
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"options": opts})})


def build_parts(cfg: Config, dist: Distributed, device: torch.device) -> TrainParts:
    """Seed, then data, task, loss, model and optimiser, in this order."""
    dims = spatial_dims(cfg)
    cfg = with_patch_topology(cfg)
    seed_everything(cfg.train.seed)
    extra = tuple(k for k in loss_needs(cfg) if k in ("weight_map", "edge"))
    if dims == 3 and extra:
        raise MedsegError(
            f"loss {cfg.loss.name} needs {', '.join(extra)} targets, which 3-D patches do not provide"
        )
    data = build_data(cfg.data, cfg.augment, seed=cfg.train.seed, extra_targets=extra)
    task = make_task(cfg.loss.mode, data.num_classes, data.class_names, cfg.data.regions, dims=dims)
    regions = task.regions if task.mode == "multilabel" else None  # label maps -> region targets
    loss_fn = build_loss(
        cfg.loss.name, mode=task.mode, regions=regions, ignore_index=IGNORE_INDEX, **cfg.loss.options
    )
    model = build_model(
        cfg.model.name, data.in_channels, task.out_channels, weights=cfg.model.weights, **cfg.model.options
    )
    init_from_weights(cfg, model)
    model = model.to(device)
    check_input_size(cfg, model)
    loss_fn = add_auxiliary_loss(cfg, loss_fn, model, data.in_channels, device)
    model = to_preferred_format(model, cfg.train.channels_last, size=cfg.data.size)
    optimizer = build_optimizer(cfg, model)
    state = model_state(cfg, task, data.in_channels)
    return TrainParts(cfg, dist, device, data, task, model, loss_fn, optimizer, state)


def build_loop(parts: TrainParts) -> TrainLoop:
    """Network wrapping (auxiliary outputs, DDP), sampler, loader and schedule length."""
    cfg, dist, device, model = parts.cfg, parts.dist, parts.device, parts.model
    uses_aux = bool(getattr(parts.loss_fn, "uses_aux", False))
    net = dist.wrap(AuxForward(model) if uses_aux else model, device)
    net = compile_training_net(net, model, parts.data.train, cfg.train, device) if cfg.train.compile else net
    sampler: EpochSampler | BatchOrderSampler
    if getattr(parts.data.train, "patch_batches", False):  # 3-D patches: batch positions matter
        parts.data.train.set_batch_size(cfg.train.batch_size)
        sampler = BatchOrderSampler(len(parts.data.train), cfg.train.batch_size, dist.rank, dist.world)
    else:
        sampler = EpochSampler(len(parts.data.train), cfg.train.seed, dist.rank, dist.world)
    loader = DataLoader(
        parts.data.train,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        drop_last=len(sampler) > cfg.train.batch_size,
        persistent_workers=cfg.train.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    if len(parts.data.train) == 0:
        raise MedsegError(f"{cfg.data.root}: the training split is empty")
    spe = len(loader) if cfg.train.steps_per_epoch is None else min(len(loader), cfg.train.steps_per_epoch)
    step = StepContext(
        model=model,
        net=net,
        loss_fn=parts.loss_fn,
        optimizer=parts.optimizer,
        scaler=torch.amp.GradScaler(enabled=cfg.train.amp == "fp16" and device.type == "cuda"),
        device=device,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
        grad_clip=cfg.train.grad_clip,
        uses_aux=uses_aux,
        margin=int(getattr(model, "output_margin", 0)),
    )
    warmup = int(round(cfg.schedule.warmup_epochs * spe))
    return TrainLoop(sampler, loader, spe, spe * cfg.train.epochs, warmup, step)
