"""Contrastive distillation losses over embeddings (MCL, Yang et al., arXiv 2104.12565).

Embeddings are L2-normalised; the similarity logits of an anchor ``a_i`` against keys ``k_j`` are
``s_ij = ⟨a_i, k_j⟩ / τ`` (``τ = 0.1``).

- **Contrastive loss** (supervised, in the style of SupCon, arXiv 2004.11362): the positives of anchor
  ``i`` are the keys with the same label, the negatives every other key;
  ``L = mean_i mean_{p ∈ P(i)} −log( exp(s_ip) / Σ_{j ∈ K(i)} exp(s_ij) )``.
  Within one network (MCL's vanilla contrastive learning, VCL) anchors and keys are the same batch and the
  anchor itself is left out of ``K(i)``; across networks (interactive contrastive learning, ICL) the
  anchor's own sample embedded by the other network is a positive and nothing is left out.
- **Soft contrastive loss** (MCL's soft VCL / soft ICL): the contrastive distributions
  ``q_i = softmax_j(s_ij / T)`` of one network are matched to another's with
  ``T² · KL(q_teacher ‖ q_student)`` (``T = 3``): ``kd_loss`` applied to similarity logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, ndim_in, positive
from workbench.distill.kd import kd_loss

DEFAULT_TAU = 0.1
DEFAULT_T = 3.0


def similarity_logits(anchors: torch.Tensor, keys: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """``(B, D), (K, D) -> (B, K)``: ``⟨normalize(a_i), normalize(k_j)⟩ / τ``."""
    ndim_in("similarity_logits", "anchors", anchors, (2,))
    ndim_in("similarity_logits", "keys", keys, (2,))
    if anchors.shape[1] != keys.shape[1]:
        raise ShapeError(
            f"similarity_logits: anchors {tuple(anchors.shape)} and keys {tuple(keys.shape)} differ in width"
        )
    positive("similarity_logits", "tau", tau)
    return F.normalize(anchors, dim=1) @ F.normalize(keys, dim=1).t() / tau


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """``(B, B) -> (B, B−1)``: every row without its diagonal entry (the anchor against itself)."""
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ShapeError(f"off_diagonal: needs a square matrix, got shape {tuple(m.shape)}")
    b = m.shape[0]
    return m.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


def contrastive_loss(
    logits: torch.Tensor, anchor_labels: torch.Tensor, key_labels: torch.Tensor, exclude_self: bool
) -> torch.Tensor:
    """Supervised contrastive loss from similarity logits ``(B, K)`` (see the module docstring).

    ``exclude_self`` drops the diagonal (square ``logits`` of a batch against itself). Anchors without
    any positive key are skipped; the loss is the mean over the others (0 when there are none).
    """
    ndim_in("contrastive_loss", "logits", logits, (2,))
    if anchor_labels.shape != logits.shape[:1] or key_labels.shape != logits.shape[1:]:
        raise ShapeError(
            f"contrastive_loss: labels {tuple(anchor_labels.shape)} / {tuple(key_labels.shape)} do not fit "
            f"logits {tuple(logits.shape)}"
        )
    positives = (anchor_labels[:, None] == key_labels[None, :]).float()
    if exclude_self:
        logits, positives = off_diagonal(logits), off_diagonal(positives)
    log_prob = F.log_softmax(logits, dim=1)
    count = positives.sum(dim=1)
    has = count > 0
    per_anchor = -(log_prob * positives).sum(dim=1)[has] / count[has]
    return per_anchor.mean() if per_anchor.numel() else logits.sum() * 0.0


def soft_contrastive_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = DEFAULT_T, exclude_self: bool = False
) -> torch.Tensor:
    """``T² · KL(softmax(s_t/T) ‖ softmax(s_s/T))`` row-wise over similarity logits ``(B, K)``, batch mean.

    The teacher is not detached here. ``exclude_self`` drops the diagonals first (a batch against itself).
    """
    if exclude_self:
        student_logits, teacher_logits = off_diagonal(student_logits), off_diagonal(teacher_logits)
    return kd_loss(student_logits, teacher_logits, T)
