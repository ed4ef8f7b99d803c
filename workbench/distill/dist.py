"""DIST: knowledge distillation from a stronger teacher (Huang, You, Wang, Qian & Xu, arXiv 2205.10536).

KL's exact match is replaced by matching *relations* of the softened predictions ``Y = softmax(Z / τ)``
(``B × C``), measured by the Pearson distance ``d(u, v) = 1 − ρ(u, v)``,
``ρ(u, v) = ⟨u − ū, v − v̄⟩ / (‖u − ū‖ ‖v − v̄‖)``:

    inter-class  L_inter = τ² · (1/B) Σ_i d(Y^S_{i,:}, Y^T_{i,:})     each sample's ranking of the classes
    intra-class  L_intra = τ² · (1/C) Σ_j d(Y^S_{:,j}, Y^T_{:,j})     each class's ranking of the samples
    DIST         = β · L_inter + γ · L_intra

ρ is invariant to a positive scale and shift of either argument, so the student need not match the
teacher's confidence, only its relations. Defaults β = γ = 1, τ = 1 are the official loss's. The
denominator is clamped below at ``eps`` (the official code adds ``eps``, which biases ρ of nearly flat
slices): a constant row or column stays finite, with distance 1, and every other slice gets ρ exactly.
"""

from __future__ import annotations

import torch

from workbench.distill._checks import ndim_in, positive, same_shape

DEFAULT_BETA = 1.0
DEFAULT_GAMMA = 1.0
DEFAULT_T = 1.0
EPS = 1e-12


def pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int = 1, eps: float = EPS) -> torch.Tensor:
    """``1 − ρ(a, b)`` along ``dim`` (one value per slice): 0 for perfectly correlated slices, 2 for anti-correlated."""
    same_shape("pearson_distance", "a", a, "b", b)
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    rho = (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(eps)
    return 1.0 - rho


def dist_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = DEFAULT_T
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_inter, L_intra)`` of the module docstring, each scaled by ``τ²``.

    Args:
        student_logits / teacher_logits: ``(B, C)``. The teacher is not detached here.
        T: the temperature τ, > 0.
    """
    ndim_in("dist_terms", "student_logits", student_logits, (2,))
    same_shape("dist_terms", "student_logits", student_logits, "teacher_logits", teacher_logits)
    positive("dist_terms", "T", T)
    y_s = torch.softmax(student_logits / T, dim=1)
    y_t = torch.softmax(teacher_logits / T, dim=1)
    inter = pearson_distance(y_s, y_t, dim=1).mean() * (T * T)
    intra = pearson_distance(y_s, y_t, dim=0).mean() * (T * T)
    return inter, intra


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    T: float = DEFAULT_T,
) -> torch.Tensor:
    """``β · L_inter + γ · L_intra`` (arXiv 2205.10536; module docstring)."""
    inter, intra = dist_terms(student_logits, teacher_logits, T)
    return beta * inter + gamma * intra
