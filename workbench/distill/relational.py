"""Relational distillation: RKD distance/angle (Park et al., arXiv 1904.05068) and
similarity-preserving KD (Tung & Mori, arXiv 1907.09682).

Inputs are embeddings ``(B, ...)``, flattened to ``(B, D)``; student and teacher widths may differ
(only relations between samples are compared), batch sizes must match. Teachers are not
detached here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError


def _pair(
    where: str, student: torch.Tensor, teacher: torch.Tensor, min_batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ShapeError(
            f"{where}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be (B, ...) "
            "with the same batch size B"
        )
    if student.shape[0] < min_batch:
        raise ShapeError(f"{where}: needs a batch of at least {min_batch} samples, got {student.shape[0]}")
    return student.flatten(1), teacher.flatten(1)


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix ``d_ij = ‖x_i − x_j‖₂`` of ``(B, D)``, diagonal exactly 0.

    Computed as ``sqrt(max(‖x_i − x_j‖², eps))`` off the diagonal so gradients stay finite.
    """
    diff = x.unsqueeze(1) - x.unsqueeze(0)
    sq = diff.pow(2).sum(dim=-1)
    off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(off, sq.clamp_min(eps).sqrt(), torch.zeros_like(sq))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """RKD distance loss (arXiv 1904.05068).

    ``ψ_D(x_i, x_j) = ‖x_i − x_j‖₂ / μ`` with ``μ`` the mean distance over the ``B(B−1)`` ordered
    pairs ``i ≠ j``; loss = mean over those pairs of ``huber_δ(ψ_D(s_i, s_j) − ψ_D(t_i, t_j))``
    (``huber_δ`` = PyTorch's ``smooth_l1_loss`` with ``beta = δ``, δ = 1 as in the paper).
    Shapes: student ``(B, ...)``, teacher ``(B, ...)``, B ≥ 2.
    """
    s, t = _pair("rkd_distance_loss", student, teacher, 2)
    off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    d_s = pairwise_distances(s)[off]
    d_t = pairwise_distances(t)[off]
    d_s = d_s / d_s.mean().clamp_min(1e-12)
    d_t = d_t / d_t.mean().clamp_min(1e-12)
    return F.smooth_l1_loss(d_s, d_t, beta=delta)


def _angles(x: torch.Tensor) -> torch.Tensor:
    # cos[j, i, k] = <e_ij, e_kj> with e_ij = (x_i - x_j) / ||x_i - x_j||: angle at vertex j.
    e = F.normalize(x.unsqueeze(1) - x.unsqueeze(0), dim=-1)  # e[i, j] = unit(x_i - x_j)
    e = e.transpose(0, 1)  # e[j, i] = unit(x_i - x_j)
    return torch.bmm(e, e.transpose(1, 2))


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """RKD angle loss (arXiv 1904.05068).

    ``ψ_A(x_i, x_j, x_k) = ⟨e_ij, e_kj⟩``, ``e_ij = (x_i − x_j)/‖x_i − x_j‖₂`` (cosine of the angle
    at vertex j); loss = mean over the ordered triplets of pairwise distinct ``(i, j, k)`` of
    ``huber_δ(ψ_A(s) − ψ_A(t))``. Shapes: student ``(B, ...)``, teacher ``(B, ...)``, B ≥ 3.
    """
    s, t = _pair("rkd_angle_loss", student, teacher, 3)
    b = s.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    distinct = ~(eye.unsqueeze(0) | eye.unsqueeze(1) | eye.unsqueeze(2))  # [j, i, k]: i≠k, j≠k, j≠i
    return F.smooth_l1_loss(_angles(s)[distinct], _angles(t)[distinct], beta=delta)


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """``G = normalize_rows(F Fᵀ)`` (rows L2-normalised) of ``(B, ...)`` flattened to ``(B, D)``."""
    f = x.flatten(1)
    return F.normalize(f @ f.t(), p=2.0, dim=1)


def similarity_preserving_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (arXiv 1907.09682): ``‖G_s − G_t‖_F² / B²``.

    ``G = normalize_rows(F Fᵀ)``. Shapes: student ``(B, ...)``, teacher ``(B, ...)``.
    """
    s, t = _pair("similarity_preserving_loss", student, teacher, 1)
    b = s.shape[0]
    return (similarity_matrix(s) - similarity_matrix(t)).pow(2).sum() / (b * b)
