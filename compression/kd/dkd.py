"""DKD: decoupled knowledge distillation from a trained teacher (Zhao et al., arXiv 2203.08679).

Student loss ``w_ce·CE(z_S, y) + r_e·(α·TCKD + β·NCKD)``, the terms of ``workbench.distill.dkd``; the
DKD term is ramped in as ``r_e = min((e + 1) / warmup, 1)`` over the first ``warmup`` epochs (the paper's
CIFAR-100 setting: α = 1, β = 8, T = 4, w_ce = 1, warmup = 20).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.kd import FrozenTeacherObjective
from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.callbacks import Callback
from workbench.config import opt
from workbench.distill.dkd import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_T, DEFAULT_WARMUP, dkd_terms, dkd_warmup
from workbench.trainer import ObjectiveOutput


@dataclasses.dataclass
class DKDWeights:
    """DKD (arXiv 2203.08679)."""

    T: float = opt(DEFAULT_T, "temperature", gt=0)
    alpha: float = opt(DEFAULT_ALPHA, "weight α of the target-class KL (TCKD)")
    beta: float = opt(DEFAULT_BETA, "weight β of the non-target-class KL (NCKD)")
    ce: float = opt(1.0, "weight of the cross-entropy")
    warmup: int = opt(DEFAULT_WARMUP, "epochs over which the DKD term ramps in linearly (0 = none)")


class DKDObjective(FrozenTeacherObjective):
    """The DKD student loss (module docstring); terms ``ce``, ``tckd``, ``nckd`` (unweighted) and ``warmup``.

    ``ramp`` is the warm-up factor of the current epoch, set by :class:`DKDWarmup`.
    """

    def __init__(
        self,
        teacher: nn.Module,
        T: float = DKDWeights.T,
        alpha: float = DKDWeights.alpha,
        beta: float = DKDWeights.beta,
        ce: float = DKDWeights.ce,
    ) -> None:
        super().__init__(teacher)
        self.T, self.alpha, self.beta, self.w_ce = T, alpha, beta, ce
        self.ramp = 1.0

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        ce = F.cross_entropy(logits, targets)
        tckd, nckd = dkd_terms(logits, teacher_logits, targets, self.T)
        loss = self.w_ce * ce + self.ramp * (self.alpha * tckd + self.beta * nckd)
        terms = {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach(), "warmup": torch.tensor(self.ramp)}
        return ObjectiveOutput(loss, logits, terms)


class DKDWarmup(Callback):
    """Sets the objective's warm-up factor at the start of every epoch (stateless: a resume recomputes it)."""

    def __init__(self, objective: DKDObjective, warmup: int) -> None:
        self.objective, self.warmup = objective, warmup

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.objective.ramp = dkd_warmup(epoch, self.warmup)


class DKD(KDMethod):
    """DKD from the teacher run."""

    section = "dkd"
    weights = DKDWeights
    needs_teacher = True

    def build(self, ctx: KDContext) -> Built:
        w = ctx.weights
        objective = DKDObjective(ctx.teacher, w.T, w.alpha, w.beta, w.ce)
        return Built(new_student(ctx), objective, [DKDWarmup(objective, w.warmup)])


KD_METHODS.register("dkd", DKD())
