"""Hinton KD from a frozen teacher (arXiv 1503.02531) and the student-alone baseline.

Student loss ``γ·CE(z_S, y) + α·T²·KL(softmax(z_T/T) ‖ softmax(z_S/T))``, T = 4, γ = 0.1, α = 0.9
(the CIFAR-100 convention of RepDistiller, arXiv 1910.10699); composed from ``hinton_objective``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.config import opt
from workbench.distill import hinton_objective
from workbench.models import frozen_copy
from workbench.trainer import Objective, ObjectiveOutput


@dataclasses.dataclass
class KDWeights:
    """Hinton KD (arXiv 1503.02531): γ·CE + α·T²·KL."""

    T: float = opt(4.0, "temperature", gt=0)
    gamma: float = opt(0.1, "weight γ of the cross-entropy")
    alpha: float = opt(0.9, "weight α of T²·KL(p_T ‖ p_S)")


class FrozenTeacherObjective(Objective):
    """Base of objectives holding a frozen teacher: the teacher stays in eval mode whatever ``train()`` says."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = frozen_copy(teacher)

    def train(self, mode: bool = True) -> FrozenTeacherObjective:
        super().train(mode)
        self.teacher.eval()
        return self


class StudentObjective(Objective):
    """The student alone: cross-entropy (reported as the term ``ce``)."""

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        logits = model(inputs)
        ce = F.cross_entropy(logits, targets)
        return ObjectiveOutput(ce, logits, {"ce": ce.detach()})


class KDObjective(FrozenTeacherObjective):
    """``γ·CE + α·T²·KL(p_T ‖ p_S)``; terms ``ce`` and ``kd`` (unweighted)."""

    def __init__(
        self, teacher: nn.Module, T: float = KDWeights.T, gamma: float = KDWeights.gamma, alpha: float = KDWeights.alpha
    ) -> None:
        super().__init__(teacher)
        self.T, self.gamma, self.alpha = T, gamma, alpha

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        loss, terms = hinton_objective(logits, teacher_logits, targets, self.T, self.gamma, self.alpha)
        return ObjectiveOutput(loss, logits, terms)


class Student(KDMethod):
    """The student alone: the baseline of every KD method."""

    def build(self, ctx: KDContext) -> Built:
        return Built(new_student(ctx), StudentObjective())


class HintonKD(KDMethod):
    """Hinton KD from the teacher run."""

    section = "kd"
    weights = KDWeights
    needs_teacher = True

    def build(self, ctx: KDContext) -> Built:
        w = ctx.weights
        return Built(new_student(ctx), KDObjective(ctx.teacher, w.T, w.gamma, w.alpha))


KD_METHODS.register("student", Student())
KD_METHODS.register("kd", HintonKD())
