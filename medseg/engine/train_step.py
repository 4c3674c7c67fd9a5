"""One optimisation step: batch to device, forward (with auxiliary outputs when the loss
uses them), loss, backward with gradient scaling and clipping, optimiser step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from medseg.engine.device import autocast_for
from medseg.engine.task import IGNORE_INDEX
from medseg.errors import MedsegError
from medseg.models.base import SegmentationModel, format_input


class AuxForward(torch.nn.Module):
    """Routes ``forward`` to ``forward_aux``: DDP only hooks ``forward``, so a model whose
    loss needs auxiliary outputs is wrapped in this before DDP."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_aux(x)


@dataclass
class StepContext:
    """What every step needs. ``model`` is the bare model (format, target cropping, clipping),
    ``net`` what is called (``model``, or it wrapped in :class:`AuxForward` and/or DDP)."""

    model: SegmentationModel
    net: torch.nn.Module
    loss_fn: Any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: str = "none"
    channels_last: bool | str = "auto"
    grad_clip: float | None = None
    uses_aux: bool = False
    margin: int = 0


def prepare_batch(ctx: StepContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Input, target and the extra targets the loss needs, on the device. Pixels outside a
    region of interest become ``IGNORE_INDEX``; valid-convolution models predict the centre
    of their input only, so their targets are cropped to it."""
    x = batch["image"].to(ctx.device, non_blocking=True)
    x = format_input(x, ctx.model, ctx.channels_last)
    target = batch["mask"].to(ctx.device, non_blocking=True)
    if "roi" in batch:
        target = target.masked_fill(~batch["roi"].to(ctx.device), IGNORE_INDEX)
    extras = {k: batch[k].to(ctx.device) for k in getattr(ctx.loss_fn, "needs", ())}
    if ctx.margin:
        valid: Any = ctx.model  # valid-convolution models (unet_valid) add crop_target
        target = valid.crop_target(target)
        extras = {k: valid.crop_target(v) for k, v in extras.items()}
    return x, target, extras


def compute_loss(ctx: StepContext, x: torch.Tensor, target: torch.Tensor, extras: dict) -> torch.Tensor:
    """The loss of one batch under the run's autocast (auxiliary outputs passed as ``aux``)."""
    with autocast_for(ctx.device, ctx.amp):
        if ctx.uses_aux:
            logits, aux = ctx.net(x)
            return ctx.loss_fn(logits, target, aux=aux, **extras)
        return ctx.loss_fn(ctx.net(x), target, **extras)


def train_step(ctx: StepContext, batch: dict, *, where: str = "") -> tuple[float, int]:
    """One optimisation step on ``batch``; returns (loss, batch size). The learning rate is
    set by the caller. A non-finite loss stops training with a clear error (``where`` says
    at which epoch and step)."""
    x, target, extras = prepare_batch(ctx, batch)
    loss = compute_loss(ctx, x, target, extras)
    if not torch.isfinite(loss):
        raise MedsegError(
            f"training diverged: loss is {loss.item()}{where}; lower optim.lr or enable train.grad_clip"
        )
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scaler.scale(loss).backward()
    if ctx.grad_clip:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return loss.item(), x.shape[0]
