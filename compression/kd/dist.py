"""DIST: distillation of the teacher's prediction relations (Huang et al., arXiv 2205.10536).

Student loss ``w_ce·CE(z_S, y) + β·L_inter + γ·L_intra``, the Pearson-relation terms of
``workbench.distill.dist`` on the softened predictions (defaults: the official loss's β = γ = 1, τ = 1).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.kd import FrozenTeacherObjective
from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.config import opt
from workbench.distill.dist import DEFAULT_BETA, DEFAULT_GAMMA, DEFAULT_T, dist_terms
from workbench.trainer import ObjectiveOutput


@dataclasses.dataclass
class DISTWeights:
    """DIST (arXiv 2205.10536)."""

    T: float = opt(DEFAULT_T, "temperature τ of the softened predictions", gt=0)
    beta: float = opt(DEFAULT_BETA, "weight β of the inter-class relation (each sample's class ranking)")
    gamma: float = opt(DEFAULT_GAMMA, "weight γ of the intra-class relation (each class's sample ranking)")
    ce: float = opt(1.0, "weight of the cross-entropy")


class DISTObjective(FrozenTeacherObjective):
    """The DIST student loss (module docstring); terms ``ce``, ``inter``, ``intra`` (unweighted)."""

    def __init__(
        self,
        teacher: nn.Module,
        T: float = DISTWeights.T,
        beta: float = DISTWeights.beta,
        gamma: float = DISTWeights.gamma,
        ce: float = DISTWeights.ce,
    ) -> None:
        super().__init__(teacher)
        self.T, self.beta, self.gamma, self.w_ce = T, beta, gamma, ce

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        ce = F.cross_entropy(logits, targets)
        inter, intra = dist_terms(logits, teacher_logits, self.T)
        loss = self.w_ce * ce + self.beta * inter + self.gamma * intra
        return ObjectiveOutput(loss, logits, {"ce": ce.detach(), "inter": inter.detach(), "intra": intra.detach()})


class DIST(KDMethod):
    """DIST from the teacher run."""

    section = "dist"
    weights = DISTWeights
    needs_teacher = True

    def build(self, ctx: KDContext) -> Built:
        w = ctx.weights
        return Built(new_student(ctx), DISTObjective(ctx.teacher, w.T, w.beta, w.gamma, w.ce))


KD_METHODS.register("dist", DIST())
