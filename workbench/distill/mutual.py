"""Deep mutual learning over a cohort (Zhang et al., DML, arXiv 1706.00384)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, ndim_in, positive


def dml_loss(logits: torch.Tensor, T: float = 1.0, detach_peers: bool = True) -> torch.Tensor:
    """Per-member mutual-learning loss ``L_i = T² · (1/(M−1)) Σ_{j≠i} KL(p_j ‖ p_i)``: ``(M,)``.

    ``p = softmax(z / T)``; each KL is summed over classes and averaged over the batch. With
    ``detach_peers`` (default) the peers' ``p_j`` are detached, so ``L_i`` trains member i only and
    ``L.sum()`` gives every member the gradient of its own loss. ``T² = 1`` at the default T = 1.

    Shapes: logits ``(M, B, C)`` with M ≥ 2.
    """
    ndim_in("dml_loss", "logits", logits, (3,))
    m = logits.shape[0]
    if m < 2:
        raise ShapeError(f"dml_loss: needs at least 2 members, got logits of shape {tuple(logits.shape)}")
    positive("dml_loss", "T", T)
    log_p = F.log_softmax(logits / T, dim=-1)
    peer_log_p = log_p.detach() if detach_peers else log_p
    peer_p = peer_log_p.exp()
    # kl[j, i, b] = Σ_c p_j (log p_j − log p_i)
    neg_entropy = (peer_p * peer_log_p).sum(dim=-1)  # (M, B)
    cross = torch.einsum("jbc,ibc->jib", peer_p, log_p)
    kl = neg_entropy.unsqueeze(1) - cross
    off_diag = ~torch.eye(m, dtype=torch.bool, device=logits.device)
    per_member = (kl.mean(dim=-1) * off_diag).sum(dim=0) / (m - 1)
    return per_member * (T * T)
