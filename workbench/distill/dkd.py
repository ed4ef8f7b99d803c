"""Decoupled knowledge distillation, DKD (Zhao, Cui, Song, Qiu & Liang, arXiv 2203.08679).

With ``p = softmax(z / T)`` per row and ``t`` the row's target class, KD's KL splits into

    b = (p_t, 1 − p_t)                                  target vs. non-target probability
    p̂_c = p_c / (1 − p_t)  for c ≠ t                    the distribution over the non-target classes
    TCKD = T² · KL(b^T ‖ b^S)                           target-class KD
    NCKD = T² · KL(p̂^T ‖ p̂^S)                           non-target-class KD
    KD   = TCKD + (1 − p_t^T) · NCKD                    (the coupling DKD removes)
    DKD  = α · TCKD + β · NCKD                          batch means

``p̂`` is the softmax of the non-target logits alone, and ``log(1 − p_t)`` is computed as
``logsumexp_{c≠t}(z_c/T) − logsumexp_c(z_c/T)``, so confident rows stay finite. The paper's CIFAR-100
setting: α = 1, β = 8, T = 4, cross-entropy weight 1, and the DKD term ramped in linearly over the first
20 epochs (``dkd_warmup``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, ndim_in, positive, same_shape

DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 8.0
DEFAULT_T = 4.0
DEFAULT_WARMUP = 20


def _check(where: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> None:
    ndim_in(where, "student_logits", student_logits, (2,))
    same_shape(where, "student_logits", student_logits, "teacher_logits", teacher_logits)
    if targets.shape != student_logits.shape[:1]:
        raise ShapeError(
            f"{where}: targets has shape {tuple(targets.shape)} but student_logits has shape "
            f"{tuple(student_logits.shape)}; targets must be (B,) class indices"
        )
    if student_logits.shape[1] < 2:
        raise ShapeError(f"{where}: DKD needs at least 2 classes, got shape {tuple(student_logits.shape)}")


def _binary_and_rest(logits: torch.Tensor, targets: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log b, log p̂)``: log of (p_t, 1 − p_t) as ``(B, 2)`` and the non-target log-softmax ``(B, C − 1)``."""
    z = logits / T
    is_target = F.one_hot(targets, z.shape[1]).bool()
    rest = z[~is_target].view(z.shape[0], z.shape[1] - 1)  # non-target logits, in class order
    log_all = torch.logsumexp(z, dim=1)
    log_b = torch.stack([z[is_target] - log_all, torch.logsumexp(rest, dim=1) - log_all], dim=1)
    return log_b, F.log_softmax(rest, dim=1)


def dkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, T: float = DEFAULT_T
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TCKD, NCKD)`` of the module docstring, each ``T² · KL`` averaged over the batch.

    Args:
        student_logits / teacher_logits: ``(B, C)``, C ≥ 2. The teacher is not detached here: detach it
            (or compute it under ``torch.no_grad``) when it must not learn from this term.
        targets: ``(B,)`` class indices.
        T: temperature, > 0.
    """
    _check("dkd_terms", student_logits, teacher_logits, targets)
    positive("dkd_terms", "T", T)
    b_s, rest_s = _binary_and_rest(student_logits, targets, T)
    b_t, rest_t = _binary_and_rest(teacher_logits, targets, T)
    tckd = (b_t.exp() * (b_t - b_s)).sum(dim=1).mean() * (T * T)
    nckd = (rest_t.exp() * (rest_t - rest_s)).sum(dim=1).mean() * (T * T)
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    T: float = DEFAULT_T,
) -> torch.Tensor:
    """``α · TCKD + β · NCKD`` (arXiv 2203.08679; module docstring), a batch mean."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, targets, T)
    return alpha * tckd + beta * nckd


def dkd_warmup(epoch: int, warmup: int = DEFAULT_WARMUP) -> float:
    """The DKD term's factor in 0-based ``epoch``: ``min((epoch + 1) / warmup, 1)`` (1 when ``warmup`` ≤ 0)."""
    return 1.0 if warmup <= 0 else min((epoch + 1) / warmup, 1.0)
