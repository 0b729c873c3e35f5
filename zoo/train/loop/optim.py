"""The optimizer and the learning rate: SGD or AdamW, and the schedule as a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; biases, norms and scales (1-d parameters) get no weight decay, as in timm."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(o.betas), eps=o.eps)  # validated: sgd or adamw


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    A linear warmup from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``, then
    ``"cosine"``: half a cosine from ``base_lr`` towards ``min_lr`` (reached one step after the last), or
    ``"step"``: ``base_lr`` times ``gamma`` for each milestone (a fraction of ``total_steps``) passed,
    the paper's /10 at 50 % and 75 % of training.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        return base_lr * gamma ** sum(step >= round(m * total_steps) for m in milestones)
    raise ValueError(f"schedule must be cosine or step, got {schedule!r}")


def sched_lr(cfg: DictConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """:func:`lr_at` with the ``sched`` group's settings."""
    s = cfg.sched
    return lr_at(
        step,
        total_steps,
        cfg.lr,
        s.name,
        warmup_steps=round(s.get("warmup_epochs", 0) * steps_per_epoch),
        min_lr=cfg.lr * s.get("min_lr_ratio", 0.0),
        milestones=tuple(s.get("milestones", (0.5, 0.75))),
        gamma=s.get("gamma", 0.1),
    )
