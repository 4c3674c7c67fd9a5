"""The training loop: AMP, schedules, clipping, validation, atomic checkpoints, exact
resume, early stopping, CSV/TensorBoard logs and curve plots; DDP through ``torchrun``.

One code path serves one process and many: under ``torchrun`` (``WORLD_SIZE`` > 1) the
model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA), each rank
reads its shard of every epoch, and rank 0 validates and writes.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from medseg.atomic import atomic_write, atomic_write_text
from medseg.config import Config
from medseg.engine import checkpoint as ckpt
from medseg.engine.evaluator import Task, make_task, predict_case, quick_dice
from medseg.engine.progress import console, make_progress
from medseg.errors import MedsegError
from medseg.models.base import format_input, to_preferred_format

IGNORE_INDEX = 255


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedsegError(f"device {name!r} requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """A permutation of the dataset that depends only on (seed, epoch), sharded by rank.

    Because the order is a pure function of the epoch, a resumed run sees exactly the
    batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank has equal work
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


def lr_factor(step: int, total: int, warmup: int, cfg) -> float:
    """Multiplier of the peak learning rate at ``step`` (linear warm-up, then the schedule)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.min_lr_ratio
    if cfg.name == "poly":
        return floor + (1 - floor) * (1 - t) ** cfg.power
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _schedule_step(step: int, t_start: float, budget_s: float | None, total_steps: int) -> int:
    """Under a time budget the schedule follows whichever runs out first, steps or time, so
    the learning rate decays to its floor when the budget ends."""
    if budget_s is None:
        return step
    by_time = int((time.monotonic() - t_start) / budget_s * total_steps)
    return max(step, min(by_time, total_steps))


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    # No weight decay on biases and normalisation parameters.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and dtype is torch.float16:
        raise MedsegError("train.amp=fp16 needs CUDA; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


class _Dist:
    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


LOG_FIELDS = ["epoch", "step", "lr", "train_loss", "val_dice", "epoch_seconds", "images_per_second"]


def _write_log(path: Path, history: list[dict]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
    atomic_write_text(path, buf.getvalue())


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    ax[0].set(title="training loss", xlabel="epoch", ylabel="loss")
    val = [(h["epoch"], h["val_dice"]) for h in history if h.get("val_dice") not in (None, "")]
    if val:
        ax[1].plot(*zip(*val), marker="o", ms=3, color="tab:green")
    ax[1].set(title="validation Dice (foreground mean)", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _model_state(cfg: Config, task: Task, in_channels: int) -> dict:
    return {
        "model_name": cfg.model.name,
        "model_options": dict(cfg.model.options),
        "in_channels": in_channels,
        "num_classes": task.num_classes,
        "out_channels": task.out_channels,
        "task_mode": task.mode,
        "class_names": list(task.class_names),
        "config": cfg.to_dict(),
        "medseg_version": __import__("medseg").__version__,
    }


def validate(model: torch.nn.Module, cases, task: Task, cfg: Config, device: torch.device) -> float:
    """Mean foreground Dice over the validation cases."""
    model.eval()
    scores = []
    with torch.no_grad():
        for i in range(len(cases)):
            case = cases[i]
            labels, _ = predict_case(model, case, cfg, device, tta=False, crf=False)
            roi = case.get("roi")
            scores.append(
                quick_dice(
                    labels, case["mask"].numpy(), task.num_classes, None if roi is None else roi.numpy()
                )
            )
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


def _loss_needs(cfg: Config) -> tuple[str, ...]:
    """Which extra batch keys the loss consumes (asked before the data is built, so the
    pipeline computes weight maps / edge targets only when needed)."""
    from medseg.losses import build_loss

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


def train(cfg: Config, *, resume: bool | str | Path = False) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; returns a summary dict (``out_dir``, ``best_val_dice``,
    ``checkpoint``, ``history``). Checkpoints go to ``OUT/checkpoints/{last,best}.safetensors``."""
    from medseg.data import build_data
    from medseg.losses import build_loss
    from medseg.models import build_model, count_parameters

    dd = _Dist()
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and dd.enabled:
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    dd.init(device)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.safetensors"
    resume_path: Path | None = None
    if resume:
        resume_path = last_path if resume is True else Path(resume)
        if not resume_path.is_file():
            raise MedsegError(f"{resume_path}: nothing to resume from (no checkpoint)")

    seed_everything(cfg.train.seed)
    extra = tuple(k for k in _loss_needs(cfg) if k in ("weight_map", "edge"))
    data = build_data(cfg.data, cfg.augment, seed=cfg.train.seed, extra_targets=extra)
    task = make_task(cfg.loss.mode, data.num_classes, data.class_names)
    loss_fn = build_loss(cfg.loss.name, mode=task.mode, ignore_index=IGNORE_INDEX, **cfg.loss.options)
    model = build_model(
        cfg.model.name, data.in_channels, task.out_channels, weights=cfg.model.weights, **cfg.model.options
    ).to(device)
    margin = int(getattr(model, "output_margin", 0))
    if margin:
        for side in cfg.data.size:
            if model.output_size(int(side)) is None:
                near = model.valid_input_size(max(1, int(side) - 2 * margin))
                raise MedsegError(
                    f"data.size {list(cfg.data.size)} is not a valid input of {cfg.model.name} "
                    f"(valid convolutions); use e.g. data.size=[{near},{near}] "
                    f"(output {model.output_size(near)})"
                )
    if not getattr(loss_fn, "uses_aux", False) and cfg.loss.aux_weight > 0:
        # Models with an auxiliary head (PSPNet) get its loss added at cfg.loss.aux_weight.
        with torch.no_grad():
            probe = torch.zeros(1, data.in_channels, *cfg.data.size, device=device)
            model.eval()
            _, aux = model.forward_aux(probe)
            model.train()
        if "aux" in aux:
            from medseg.losses import with_auxiliary

            loss_fn = with_auxiliary(loss_fn, aux_weight=cfg.loss.aux_weight)
    uses_aux = bool(getattr(loss_fn, "uses_aux", False))
    model = to_preferred_format(model, cfg.train.channels_last)
    optimizer = build_optimizer(cfg, model)
    state = _model_state(cfg, task, data.in_channels)

    history: list[dict] = []
    start_epoch, best, stale, step = 1, -1.0, 0, 0
    if resume_path is not None:
        saved = ckpt.restore_training(
            resume_path,
            model,
            optimizer,
            expect={k: state[k] for k in ("model_name", "model_options", "in_channels", "num_classes")},
        )
        history = saved["history"]
        start_epoch, best, stale, step = saved["epoch"] + 1, saved["best"], saved["stale"], saved["step"]
        if dd.main:
            console.print(f"resuming from {resume_path} at epoch {start_epoch}")
        if saved.get("finished"):
            start_epoch = cfg.train.epochs + 1

    net: torch.nn.Module = AuxForward(model) if uses_aux else model
    if dd.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = EpochSampler(len(data.train), cfg.train.seed, dd.rank, dd.world)
    loader = DataLoader(
        data.train,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        drop_last=len(sampler) > cfg.train.batch_size,
        persistent_workers=cfg.train.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    if len(data.train) == 0:
        raise MedsegError(f"{cfg.data.root}: the training split is empty")
    steps_per_epoch = (
        len(loader) if cfg.train.steps_per_epoch is None else min(len(loader), cfg.train.steps_per_epoch)
    )
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup = int(round(cfg.schedule.warmup_epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(enabled=cfg.train.amp == "fp16" and device.type == "cuda")

    writer = None
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", cfg.to_yaml())
        if cfg.train.log_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                writer = None
        n_params = count_parameters(model)
        console.print(
            f"[bold]{cfg.model.name}[/] ({n_params / 1e6:.2f} M parameters) on {device}, "
            f"{len(data.train)} training / {len(data.val)} validation samples, "
            f"{task.mode} with {task.num_classes} classes, loss {cfg.loss.name}"
        )

    t_start = time.monotonic()
    budget_s = None if cfg.train.budget_minutes is None else cfg.train.budget_minutes * 60
    stop_reason = "epochs"
    net.train()
    with make_progress(transient=False) as progress:
        bar = progress.add_task("training", total=total_steps, completed=(start_epoch - 1) * steps_per_epoch)
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            sampler.set_epoch(epoch)
            if hasattr(data.train, "set_epoch"):
                data.train.set_epoch(epoch)
            t0 = time.monotonic()
            running, seen = 0.0, 0
            for i, batch in enumerate(loader):
                if i >= steps_per_epoch:
                    break
                for g in optimizer.param_groups:
                    g["lr"] = cfg.optim.lr * lr_factor(
                        _schedule_step(step, t_start, budget_s, total_steps),
                        total_steps,
                        warmup,
                        cfg.schedule,
                    )
                x = batch["image"].to(device, non_blocking=True)
                x = format_input(x, model, cfg.train.channels_last)
                target = batch["mask"].to(device, non_blocking=True)
                if "roi" in batch:
                    target = target.masked_fill(~batch["roi"].to(device), IGNORE_INDEX)
                extras = {k: batch[k].to(device) for k in getattr(loss_fn, "needs", ())}
                if margin:  # valid-convolution models predict the centre of their input only
                    target = model.crop_target(target)
                    extras = {k: model.crop_target(v) for k, v in extras.items()}
                with _autocast(device, cfg.train.amp):
                    if uses_aux:
                        logits, aux = net(x)
                        loss = loss_fn(logits, target, aux=aux, **extras)
                    else:
                        loss = loss_fn(net(x), target, **extras)
                if not torch.isfinite(loss):
                    raise MedsegError(
                        f"training diverged: loss is {loss.item()} at epoch {epoch}, step {i}; "
                        "lower optim.lr or enable train.grad_clip"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                running += loss.item() * x.shape[0]
                seen += x.shape[0]
                progress.update(
                    bar, advance=1, description=f"epoch {epoch}/{cfg.train.epochs} loss {running / seen:.4f}"
                )
                if budget_s is not None and dd.broadcast(time.monotonic() - t_start >= budget_s):
                    break  # out of time mid-epoch: validate and checkpoint below, then stop
            seconds = time.monotonic() - t0
            train_loss = dd.mean(running / max(seen, 1))
            row: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                "val_dice": None,
                "epoch_seconds": round(seconds, 3),
                "images_per_second": round(seen * dd.world / max(seconds, 1e-9), 3),
            }
            improved = False
            if dd.main and len(data.val) and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
                row["val_dice"] = validate(model, data.val, task, cfg, device)
                if row["val_dice"] > best:
                    best, stale, improved = row["val_dice"], 0, True
                else:
                    stale += 1
            elif dd.main and not len(data.val):
                improved = True  # without a validation split the latest model is the best we know
            history.append(row)
            over_budget = budget_s is not None and time.monotonic() - t_start >= budget_s
            patience_out = cfg.train.early_stopping is not None and stale >= cfg.train.early_stopping
            finished = epoch == cfg.train.epochs or patience_out  # a budget stop can be resumed
            if dd.main:
                saved_state = {
                    **state,
                    "epoch": epoch,
                    "step": step,
                    "best": best,
                    "stale": stale,
                    "history": history,
                    "finished": finished,
                }
                if improved:
                    ckpt.save_checkpoint(
                        ckpt_dir / "best.safetensors", model, {**saved_state, "best_epoch": epoch}
                    )
                ckpt.save_checkpoint(last_path, model, saved_state, optimizer=optimizer, rng=True)
                _write_log(out / "log.csv", history)
                plot_curves(history, out / "curves.png")
                if writer is not None:
                    for key in ("train_loss", "val_dice", "lr", "images_per_second"):
                        if row.get(key) is not None:
                            writer.add_scalar(key, row[key], epoch)
                    writer.flush()
                vd = "" if row["val_dice"] is None else f"  val Dice {row['val_dice']:.4f}"
                progress.console.print(
                    f"epoch {epoch}: loss {train_loss:.4f}{vd}  ({row['images_per_second']:.1f} img/s)"
                )
            stop = dd.broadcast(over_budget or patience_out)
            if stop:
                stop_reason = "budget" if over_budget else "early stopping"
                break
    if writer is not None:
        writer.close()
    dd.barrier()
    best_path = ckpt_dir / "best.safetensors"
    return {
        "out_dir": str(out),
        "best_val_dice": best if best >= 0 else None,
        "checkpoint": str(best_path if best_path.exists() else last_path),
        "last_checkpoint": str(last_path),
        "history": history,
        "stop_reason": stop_reason,
        "task": task,
        "rank": dd.rank,
    }


class AuxForward(torch.nn.Module):
    """Routes ``forward`` to ``forward_aux``: DDP only hooks ``forward``, so a model whose
    loss needs auxiliary outputs is wrapped in this before DDP."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_aux(x)
