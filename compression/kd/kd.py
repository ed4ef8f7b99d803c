"""Hinton KD from a frozen teacher (arXiv 1503.02531) and the student-alone baseline.

Student loss ``γ·CE(z_S, y) + α·T²·KL(softmax(z_T/T) ‖ softmax(z_S/T))``, T = 4, γ = 0.1, α = 0.9
(the CIFAR-100 convention of RepDistiller, arXiv 1910.10699); composed from ``hinton_objective``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distill import hinton_objective
from workbench.trainer import Objective, ObjectiveOutput


class FrozenTeacherObjective(Objective):
    """Base of objectives holding a frozen teacher: the teacher stays in eval mode whatever ``train()`` says."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

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

    def __init__(self, teacher: nn.Module, T: float = 4.0, gamma: float = 0.1, alpha: float = 0.9) -> None:
        super().__init__(teacher)
        self.T, self.gamma, self.alpha = T, gamma, alpha

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        loss, terms = hinton_objective(logits, teacher_logits, targets, self.T, self.gamma, self.alpha)
        return ObjectiveOutput(loss, logits, terms)
