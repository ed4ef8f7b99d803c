"""A cohort of networks trained together as one module (online distillation: MCL, CTSL-MKT).

``Cohort(members)`` is an ``nn.Module`` holding the members in a ``ModuleList`` (paths ``members.0``,
``members.1``, ...), so the one workbench Trainer optimises, checkpoints and resumes them together.
``model(x)`` returns the ensemble's mean logits (or member ``active``'s logits when set), which is what
the Trainer evaluates; ``model(x, all_members=True)`` returns every member's logits ``(M, B, C)``.
``MemberAccuracy`` logs every member's test accuracy after each evaluation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from compression.kd.registry import Built, KDContext, KDMethod
from workbench.callbacks import Callback
from workbench.errors import WorkbenchError
from workbench.models.saved import unwrap_model
from workbench.trainer import evaluate_classifier


class Cohort(nn.Module):
    """Members trained together; forward gives the ensemble (default), one member, or all of them."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.active: int | None = None

    def require_members(self, method: str, minimum: int = 2) -> None:
        """Refuse a cohort smaller than ``minimum`` (online distillation needs peers)."""
        if len(self.members) < minimum:
            got = len(self.members)
            raise WorkbenchError(f"{method} needs a cohort of at least {minimum} networks, got cohort={got}")

    def member_paths(self, path: str) -> list[str]:
        """``members.i.<path>`` for every member (feature paths for ``FeatureHooks`` on the cohort)."""
        return [f"members.{i}.{path}" for i in range(len(self.members))]

    def forward(self, x: torch.Tensor, all_members: bool = False) -> torch.Tensor:
        if all_members:
            return torch.stack([m(x) for m in self.members])
        if self.active is not None:
            return self.members[self.active](x)
        return torch.stack([m(x) for m in self.members]).mean(0)


def member_accuracies(
    cohort: Cohort, dataset: Dataset, device: torch.device, batch_size: int, precision: str = "fp32"
) -> list[float]:
    """Test accuracy (%) of every member alone."""
    accs = []
    try:
        for i in range(len(cohort.members)):
            cohort.active = i
            accs.append(evaluate_classifier(cohort, dataset, device, batch_size, precision)["acc"])
    finally:
        cohort.active = None
    return accs


class MemberAccuracy(Callback):
    """After every evaluation, log ``test/acc_member{i}`` for each member (the Trainer logs the ensemble)."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if "test/acc" not in logs or trainer.eval_data is None or not trainer.is_main:
            return
        cohort = unwrap_model(trainer.model)
        accs = member_accuracies(
            cohort, trainer.eval_data, trainer.device, trainer.cfg.eval_batch_size, trainer.cfg.precision
        )
        trainer.log({f"test/acc_member{i}": a for i, a in enumerate(accs)})


class CohortMethod(KDMethod):
    """A KD method training a cohort: every member's accuracy reported (the student accuracy is their mean),
    every member saved as ``member{i}.pt``."""

    cohort = True

    def report(self, ctx: KDContext, built: Built, trainer: Any, logs: dict[str, float]) -> dict[str, Any]:
        from workbench.flops import model_cost

        cfg = ctx.cfg
        with torch.no_grad():
            accs = member_accuracies(built.model, ctx.test, trainer.device, cfg.eval_batch_size, cfg.precision)
        cost = model_cost(built.model.members[0], ctx.input_shape)
        return {
            "member_acc": accs,
            "student_acc": sum(accs) / len(accs),
            "best_member_acc": max(accs),
            "ensemble_acc": logs.get("test/acc"),
            "macs": cost["macs"],
            "params": cost["params"],
        }

    def files(self, built: Built) -> dict[str, nn.Module]:
        return {f"member{i}.pt": m for i, m in enumerate(built.model.members)}
