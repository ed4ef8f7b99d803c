"""Build a registered method's strategy, and save/restore its state for the per-task checkpoint.

Every method (``continual.registry.CIL_METHODS``) gets the same backbone, optimizer, epochs, batch size,
evaluator and :class:`~continual.plugins.WorkbenchPlugin`; what it builds around them is its entry's ``build``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.registry import CIL_METHODS, CILContext

CLOCK_FIELDS = (
    "train_iterations",
    "train_exp_counter",
    "train_exp_epochs",
    "train_exp_iterations",
    "train_epoch_iterations",
    "total_iterations",
)


def build_backbone(cfg: Any, stream: Any) -> nn.Module:
    from workbench.models import build_model

    return build_model(cfg.model, num_classes=stream.num_classes, in_channels=stream.in_channels)


def build_strategy(cfg: Any, stream: Any, backbone: nn.Module, device: torch.device, plugins: list, evaluator: Any):
    """The strategy of ``cfg.method`` around ``backbone`` (already seeded and built)."""
    ctx = CILContext(cfg=cfg, stream=stream, backbone=backbone, device=device, plugins=plugins, evaluator=evaluator)
    return CIL_METHODS[cfg.method].build(ctx)


def strategy_state(strategy: Any, method: str) -> dict[str, Any]:
    """Everything a strategy carries from one task to the next, as tensors, numbers, lists and dicts."""
    state = CIL_METHODS[method].state(strategy)
    state["clock"] = {f: int(getattr(strategy.clock, f)) for f in CLOCK_FIELDS}
    return state


def load_strategy_state(strategy: Any, state: dict[str, Any], method: str) -> None:
    """Restore what :func:`strategy_state` saved into a freshly built strategy of the same config."""
    CIL_METHODS[method].load_state(strategy, state)
    for f, v in state["clock"].items():
        setattr(strategy.clock, f, v)
