"""Optimizers and learning-rate schedules (per optimizer step, with linear warm-up)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from workbench.errors import unknown

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "multistep", "cosine")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """SGD (with momentum/Nesterov), Adam or AdamW over ``params``."""
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise unknown("optimizer", name, OPTIMIZERS)


def optimizer_factory(
    name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, nesterov: bool = False
) -> Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]:
    """``params → build_optimizer(params, name, lr, ...)``: for loops that build a fresh optimizer per phase
    (the CIL strategies rebuild theirs at every task)."""

    def make(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return build_optimizer(params, name, lr, weight_decay, momentum, nesterov)

    return make


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    schedule: str,
    warmup_epochs: float = 0.0,
    milestones: Iterable[int] = (),
    step_size: int = 30,
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_epochs``; then
    cosine ``½(1 + cos(π·t/T))`` over the steps after warm-up, step ``γ^⌊epoch/step_size⌋``,
    multistep ``γ^#{m ≤ epoch}``, none ``1``.
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    epoch = step // max(1, steps_per_epoch)
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        total = max(1, epochs * steps_per_epoch - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / total)))
    if schedule == "step":
        return gamma ** (epoch // max(1, step_size))
    if schedule == "multistep":
        return gamma ** sum(1 for m in milestones if m <= epoch)
    raise unknown("schedule", schedule, SCHEDULES)


def build_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, schedule: str, **kwargs
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, epochs, schedule, **kwargs)
    )
