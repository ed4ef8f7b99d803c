"""Build a strategy by method name, and save/restore its state for the per-task checkpoint.

``naive``, ``lwf``, ``ewc`` and ``joint`` are Avalanche's own strategies (``Naive``, ``LwF``, ``EWC``,
``JointTraining``) used as shipped; ``etag`` and ``ir`` are the workbench's (``continual.etag``,
``continual.ir``). All get the same backbone, optimizer, epochs, batch size, evaluator and
:class:`~continual.plugins.WorkbenchPlugin`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from continual.template import WorkbenchTemplate
from workbench.optim import build_optimizer

CLOCK_FIELDS = (
    "train_iterations",
    "train_exp_counter",
    "train_exp_epochs",
    "train_exp_iterations",
    "train_epoch_iterations",
    "total_iterations",
)


def optimizer_factory(cfg: Any):
    def make(params):
        return build_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)

    return make


def build_backbone(cfg: Any, stream: Any) -> nn.Module:
    from workbench.models import build_model

    return build_model(cfg.model, num_classes=stream.num_classes, in_channels=stream.in_channels)


def build_strategy(cfg: Any, stream: Any, backbone: nn.Module, device: torch.device, plugins: list, evaluator: Any):
    """The strategy of ``cfg.method`` around ``backbone`` (already seeded and built)."""
    from avalanche.training import EWC, JointTraining, LwF, Naive

    factory = optimizer_factory(cfg)
    common = dict(
        train_mb_size=cfg.batch_size,
        train_epochs=cfg.epochs,
        eval_mb_size=cfg.eval_batch_size,
        device=device,
        plugins=plugins,
        evaluator=evaluator,
        eval_every=-1,
    )
    ce = nn.CrossEntropyLoss()
    if cfg.method == "etag":
        from continual.etag import ETag
        from continual.models import ETagNet

        net = ETagNet(backbone, stream.num_classes)
        return ETag(
            model=net,
            etag_cfg=cfg.etag,
            optimizer_factory=factory,
            task_classes=stream.task_classes,
            num_classes=stream.num_classes,
            **common,
        )
    if cfg.method == "ir":
        from continual.ir import IR
        from continual.models import IRNet

        return IR(
            model=IRNet(backbone),
            ir_cfg=cfg.ir,
            optimizer_factory=factory,
            task_classes=stream.task_classes,
            num_classes=stream.num_classes,
            **common,
        )
    optimizer = factory(backbone.parameters())
    if cfg.method == "naive":
        return Naive(model=backbone, optimizer=optimizer, criterion=ce, **common)
    if cfg.method == "lwf":
        return LwF(
            model=backbone,
            optimizer=optimizer,
            criterion=ce,
            alpha=cfg.baseline.lwf_alpha,
            temperature=cfg.baseline.lwf_temperature,
            **common,
        )
    if cfg.method == "ewc":
        return EWC(model=backbone, optimizer=optimizer, criterion=ce, ewc_lambda=cfg.baseline.ewc_lambda, **common)
    if cfg.method == "joint":
        return JointTraining(model=backbone, optimizer=optimizer, criterion=ce, **common)
    raise AssertionError(f"unhandled method {cfg.method}")


def _plugin(strategy: Any, name: str) -> Any:
    return next((p for p in strategy.plugins if type(p).__name__ == name), None)


def strategy_state(strategy: Any) -> dict[str, Any]:
    """Everything a strategy carries from one task to the next, as tensors, numbers, lists and dicts."""
    state = strategy.state() if isinstance(strategy, WorkbenchTemplate) else {"model": strategy.model.state_dict()}
    state["clock"] = {f: int(getattr(strategy.clock, f)) for f in CLOCK_FIELDS}
    lwf = _plugin(strategy, "LwFPlugin")
    if lwf is not None:
        reg = lwf.lwf
        state["lwf"] = {
            "expcount": reg.expcount,
            "prev_model": None if reg.prev_model is None else reg.prev_model.state_dict(),
            "prev_classes": {int(t): sorted(int(c) for c in cs) for t, cs in reg.prev_classes_by_task.items()},
        }
    ewc = _plugin(strategy, "EWCPlugin")
    if ewc is not None:
        state["ewc"] = {
            "saved_params": {int(t): {k: v.data.cpu() for k, v in d.items()} for t, d in ewc.saved_params.items()},
            "importances": {int(t): {k: v.data.cpu() for k, v in d.items()} for t, d in ewc.importances.items()},
        }
    return state


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Restore what :func:`strategy_state` saved into a freshly built strategy of the same config."""
    from avalanche.training.utils import ParamData

    if isinstance(strategy, WorkbenchTemplate):
        strategy.load_state(state)
    else:
        strategy.model.load_state_dict(state["model"])
    for f, v in state["clock"].items():
        setattr(strategy.clock, f, v)
    if "lwf" in state:
        reg = _plugin(strategy, "LwFPlugin").lwf
        reg.expcount = state["lwf"]["expcount"]
        if state["lwf"]["prev_model"] is not None:
            prev = copy.deepcopy(strategy.model)
            prev.load_state_dict(state["lwf"]["prev_model"])
            reg.prev_model = prev
        reg.prev_classes_by_task = defaultdict(set, {t: set(cs) for t, cs in state["lwf"]["prev_classes"].items()})
    if "ewc" in state:
        ewc = _plugin(strategy, "EWCPlugin")
        device = strategy.device
        for attr in ("saved_params", "importances"):
            restored = defaultdict(dict)
            for t, d in state["ewc"][attr].items():
                restored[t] = {k: ParamData(k, init_tensor=v.to(device), device=device) for k, v in d.items()}
            setattr(ewc, attr, restored)
