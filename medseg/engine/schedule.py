"""Optimiser and learning-rate schedule: AdamW / SGD without weight decay on biases and
norms; linear warm-up, then poly (nnU-Net, Isensee et al. 2021), cosine (Loshchilov & Hutter
2017, SGDR, without restarts) or constant."""

from __future__ import annotations

import math

import torch

from medseg.config import Config, ScheduleConfig


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``cfg.optim`` over ``model``'s trainable parameters; no weight decay on 1-D parameters."""
    o = cfg.optim
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def lr_factor(step: int, total: int, warmup: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total`` (linear warm-up over
    ``warmup`` steps, then the schedule, which reaches ``cfg.min_lr_ratio`` at ``total``)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.min_lr_ratio
    if cfg.name == "poly":
        return floor + (1 - floor) * (1 - t) ** cfg.power
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group the learning rate ``lr``."""
    for g in optimizer.param_groups:
        g["lr"] = lr
