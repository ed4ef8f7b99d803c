"""Avalanche's own strategies, used as shipped: ``naive`` (fine-tuning), ``lwf`` (Li & Hoiem, arXiv 1606.09282),
``ewc`` (Kirkpatrick et al., arXiv 1612.00796, separate mode) and ``joint`` (``JointTraining``, the upper bound:
row t of its matrix is a fresh model, same initialisation, trained on tasks 0..t).

LwF and EWC share the ``baseline`` section (``baseline.lwf_alpha``, ``baseline.lwf_temperature``,
``baseline.ewc_lambda``). What their plugins carry across tasks (LwF's previous model, EWC's saved parameters
and importances) goes into the per-task checkpoint, so a run resumes exactly.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from typing import Any

from continual.registry import CIL_METHODS, CILContext, CILMethod
from workbench.config import opt


@dataclasses.dataclass
class BaselineConfig:
    """Keys of Avalanche's LwF and EWC."""

    lwf_alpha: float = opt(1.0, "LwF distillation weight α", ge=0)
    lwf_temperature: float = opt(2.0, "LwF temperature", gt=0)
    ewc_lambda: float = opt(100.0, "EWC penalty λ", ge=0)


def _plugin(strategy: Any, name: str) -> Any:
    return next((p for p in strategy.plugins if type(p).__name__ == name), None)


class AvalancheBaseline(CILMethod):
    """An Avalanche strategy class over the bare backbone with cross-entropy."""

    strategy_name = "Naive"

    def extra(self, ctx: CILContext) -> dict[str, Any]:
        return {}

    def build(self, ctx: CILContext) -> Any:
        import avalanche.training as training
        from torch import nn

        cls = getattr(training, self.strategy_name)
        optimizer = ctx.optimizer_factory()(ctx.backbone.parameters())
        return cls(
            model=ctx.backbone, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), **self.extra(ctx), **ctx.common()
        )


class Naive(AvalancheBaseline):
    strategy_name = "Naive"
    paper = "fine-tuning (lower bound)"


class Joint(AvalancheBaseline):
    strategy_name = "JointTraining"
    retrains = True
    paper = "joint training (upper bound)"


class LwF(AvalancheBaseline):
    strategy_name = "LwF"
    section = "baseline"
    keys = BaselineConfig
    paper = "arXiv 1606.09282"

    def extra(self, ctx: CILContext) -> dict[str, Any]:
        return {"alpha": ctx.keys.lwf_alpha, "temperature": ctx.keys.lwf_temperature}

    def state(self, strategy: Any) -> dict[str, Any]:
        reg = _plugin(strategy, "LwFPlugin").lwf
        return {
            **super().state(strategy),
            "lwf": {
                "expcount": reg.expcount,
                "prev_model": None if reg.prev_model is None else reg.prev_model.state_dict(),
                "prev_classes": {int(t): sorted(int(c) for c in cs) for t, cs in reg.prev_classes_by_task.items()},
            },
        }

    def load_state(self, strategy: Any, state: dict[str, Any]) -> None:
        super().load_state(strategy, state)
        reg = _plugin(strategy, "LwFPlugin").lwf
        reg.expcount = state["lwf"]["expcount"]
        if state["lwf"]["prev_model"] is not None:
            prev = copy.deepcopy(strategy.model)
            prev.load_state_dict(state["lwf"]["prev_model"])
            reg.prev_model = prev
        reg.prev_classes_by_task = defaultdict(set, {t: set(cs) for t, cs in state["lwf"]["prev_classes"].items()})


class EWC(AvalancheBaseline):
    strategy_name = "EWC"
    section = "baseline"
    keys = BaselineConfig
    paper = "arXiv 1612.00796"

    def extra(self, ctx: CILContext) -> dict[str, Any]:
        return {"ewc_lambda": ctx.keys.ewc_lambda}

    def state(self, strategy: Any) -> dict[str, Any]:
        ewc = _plugin(strategy, "EWCPlugin")
        return {
            **super().state(strategy),
            "ewc": {
                "saved_params": {int(t): {k: v.data.cpu() for k, v in d.items()} for t, d in ewc.saved_params.items()},
                "importances": {int(t): {k: v.data.cpu() for k, v in d.items()} for t, d in ewc.importances.items()},
            },
        }

    def load_state(self, strategy: Any, state: dict[str, Any]) -> None:
        from avalanche.training.utils import ParamData

        super().load_state(strategy, state)
        ewc = _plugin(strategy, "EWCPlugin")
        device = strategy.device
        for attr in ("saved_params", "importances"):
            restored = defaultdict(dict)
            for t, d in state["ewc"][attr].items():
                restored[t] = {k: ParamData(k, init_tensor=v.to(device), device=device) for k, v in d.items()}
            setattr(ewc, attr, restored)


CIL_METHODS.register("naive", Naive())
CIL_METHODS.register("lwf", LwF())
CIL_METHODS.register("ewc", EWC())
CIL_METHODS.register("joint", Joint())
