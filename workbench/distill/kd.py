"""Temperature-scaled KL distillation (Hinton, Vinyals & Dean, arXiv 1503.02531).

``kd_loss`` is the soft-target term ``T² · KL(p_T ‖ p_S)`` with ``p = softmax(z / T)``;
``hinton_objective`` is the full student objective ``γ·CE(z_S, y) + α·T²·KL(p_T ‖ p_S)``
with the CIFAR-100 convention T = 4, γ = 0.1, α = 0.9.

Teacher logits may be any logit vector, including a weighted group target
``t_i = Σ_j α_ij z_j`` (see ``workbench.distill.group``): the loss only needs logits.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, ndim_in, positive, same_shape
from workbench.errors import unknown

Reduction = Literal["batchmean", "sum", "none"]

DEFAULT_T = 4.0
DEFAULT_GAMMA = 0.1
DEFAULT_ALPHA = 0.9


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    T: float = DEFAULT_T,
    reduction: Reduction = "batchmean",
) -> torch.Tensor:
    """Soft-target loss ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (arXiv 1503.02531).

    Per row: ``T² · Σ_c p_t,c · (log p_t,c − log p_s,c)``. The class axis is the last one;
    every leading axis is a "row" (shape ``(B, C)``, or e.g. ``(M, B, C)`` for a stack).

    Args:
        student_logits: ``(..., C)``.
        teacher_logits: ``(..., C)``, same shape. Not detached here: detach it (or compute it
            under ``torch.no_grad``) when the teacher must not learn from this term.
        T: temperature, > 0.
        reduction: ``"batchmean"`` (mean over all rows, the default), ``"sum"`` (sum over rows)
            or ``"none"`` (tensor of the leading shape ``(...)``).
    """
    same_shape("kd_loss", "student_logits", student_logits, "teacher_logits", teacher_logits)
    if student_logits.dim() < 1:
        raise ShapeError("kd_loss: logits must have a class axis, got a scalar")
    positive("kd_loss", "T", T)
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=-1)
    per_row = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1) * (T * T)
    if reduction == "batchmean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise unknown("reduction", reduction, ("batchmean", "sum", "none"))


def hinton_objective(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    T: float = DEFAULT_T,
    gamma: float = DEFAULT_GAMMA,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinton KD objective ``γ·CE(z_S, y) + α·T²·KL(p_T ‖ p_S)`` (arXiv 1503.02531).

    The teacher is frozen: its logits are detached here. CE is the batch mean of the
    cross-entropy on the hard labels; the KL term is ``kd_loss(..., T)`` (batch mean).

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        targets: ``(B,)`` integer class labels.

    Returns:
        ``(total, {"ce": ce, "kd": kd})``; the parts are detached, unweighted values for logging.
    """
    ndim_in("hinton_objective", "student_logits", student_logits, (2,))
    same_shape("hinton_objective", "student_logits", student_logits, "teacher_logits", teacher_logits)
    if targets.shape != student_logits.shape[:1]:
        raise ShapeError(
            f"hinton_objective: targets has shape {tuple(targets.shape)} but student_logits has shape "
            f"{tuple(student_logits.shape)}; targets must be (B,) class indices"
        )
    ce = F.cross_entropy(student_logits, targets)
    kd = kd_loss(student_logits, teacher_logits.detach(), T)
    total = gamma * ce + alpha * kd
    return total, {"ce": ce.detach(), "kd": kd.detach()}
