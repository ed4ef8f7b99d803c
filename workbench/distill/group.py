"""Group targets for online distillation: mean and attention-weighted (OPD-DA, arXiv 2406.05488,
attention in the style of OKDDip, arXiv 1912.00350).

A group of M members sees the same batch; member i gives decision logits ``z_i`` ``(B, A)`` and
feature ``h_i`` ``(B, D)``; they are passed stacked: ``decisions (M, B, A)``, ``features (M, B, D)``.

Decision-Attention: ``q_i = W_q h_i``, ``k_j = W_k h_j`` (shared bias-free linear maps D -> P);
``α_ij = softmax_j(q_i · k_j)`` over all j including i (plain dot product by default,
``/ sqrt(P)`` with ``scaled=True``); target ``t_i = Σ_j α_ij z_j``. α is returned per sample,
shape ``(B, M, M)`` with ``α[b, i, j]``, rows summing to 1; average over b to log a matrix.

Peer detachment (``detach_peers=True``, the OPD-DA default): in member i's target the peers'
``z_j`` and ``h_j`` (j ≠ i) are detached, member i's own ``z_i``, ``h_i`` are not, and W_q, W_k
always get gradients through α. All members are computed at once (no loop over members): the
value of every output is the same as without detachment, only the gradient paths differ, which
a diagonal mask arranges. Summing the members' losses therefore gives each member exactly the
gradient of its own loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from workbench.distill._checks import ShapeError, ndim_in, same_shape
from workbench.distill.kd import kd_loss
from workbench.errors import unknown

DEFAULT_T = 3.0


def _eye(m: int, device: torch.device) -> torch.Tensor:
    return torch.eye(m, dtype=torch.bool, device=device)


def mean_group_targets(decisions: torch.Tensor, detach_peers: bool = True) -> torch.Tensor:
    """``t_i = (1/M) Σ_j z_j`` for every member: ``(M, B, A) -> (M, B, A)`` (opd-mean baseline).

    With ``detach_peers`` the peers' ``z_j`` (j ≠ i) are detached in ``t_i``.
    """
    ndim_in("mean_group_targets", "decisions", decisions, (3,))
    m = decisions.shape[0]
    if not detach_peers:
        return decisions.mean(dim=0, keepdim=True).expand_as(decisions)
    peers = decisions.detach().sum(dim=0, keepdim=True) - decisions.detach()
    return (decisions + peers) / m


def attention_group_targets(values: torch.Tensor, alpha: torch.Tensor, detach_peers: bool = True) -> torch.Tensor:
    """``t_i = Σ_j α_ij v_j`` per sample: values ``(M, B, K)``, alpha ``(B, M, M)`` -> ``(M, B, K)``.

    With ``detach_peers``: ``t_i = α_ii v_i + Σ_{j≠i} α_ij v_j.detach()`` (α itself is not detached).
    """
    ndim_in("attention_group_targets", "values", values, (3,))
    m, b = values.shape[:2]
    if alpha.shape != (b, m, m):
        raise ShapeError(
            f"attention_group_targets: alpha has shape {tuple(alpha.shape)}, expected (B, M, M) = "
            f"{(b, m, m)} "
            f"for values of shape {tuple(values.shape)}"
        )
    if not detach_peers:
        return torch.einsum("bij,jbk->ibk", alpha, values)
    eye = _eye(m, values.device)
    off_diag = alpha.masked_fill(eye, 0.0)
    self_weight = alpha.diagonal(dim1=1, dim2=2).t().unsqueeze(-1)  # (M, B, 1): α_ii
    return torch.einsum("bij,jbk->ibk", off_diag, values.detach()) + self_weight * values


class DecisionAttention(nn.Module):
    """OKDDip-style attention over a group of M members (arXiv 2406.05488, arXiv 1912.00350).

    Args:
        feature_dim: width D of the vectors attention is computed from (the features, or the
            decisions when ``source="decisions"``).
        num_members: group size M (checked on every call).
        proj_dim: width P of the query/key maps; default ``max(1, feature_dim // 8)``.
        scaled: divide the scores by ``sqrt(P)`` (default False: plain ``q_i · k_j``).
        source: ``"features"`` (default): W_q, W_k act on ``h``; ``"decisions"``: they act on ``z``.
        include_self: ``j`` runs over all M members (default, the paper's); False: over the peers only,
            ``α_ij = softmax_{j≠i}(q_i · k_j)``, ``α_ii = 0`` (a variant: with the member itself in the sum the
            distillation loss that trains W_q, W_k is zero at ``α_ii = 1``, and the attention can collapse there).
    """

    def __init__(
        self,
        feature_dim: int,
        num_members: int,
        proj_dim: int | None = None,
        scaled: bool = False,
        source: Literal["features", "decisions"] = "features",
        include_self: bool = True,
    ) -> None:
        super().__init__()
        if not include_self and num_members < 2:
            raise ShapeError(f"DecisionAttention: include_self=False needs at least 2 members, got {num_members}")
        if source not in ("features", "decisions"):
            raise unknown("attention source", source, ("features", "decisions"))
        self.feature_dim = feature_dim
        self.num_members = num_members
        self.proj_dim = proj_dim if proj_dim is not None else max(1, feature_dim // 8)
        self.scaled = scaled
        self.source = source
        self.include_self = include_self
        self.w_q = nn.Linear(feature_dim, self.proj_dim, bias=False)
        self.w_k = nn.Linear(feature_dim, self.proj_dim, bias=False)

    def attention(self, inputs: torch.Tensor, detach_peers: bool = True) -> torch.Tensor:
        """``α[b, i, j] = softmax_j(q_i · k_j)`` from ``inputs`` ``(M, B, D)`` (j ≠ i unless ``include_self``);
        returns ``(B, M, M)``.

        With ``detach_peers`` the score ``q_i · k_j`` uses ``W_k inputs_j.detach()`` for j ≠ i.
        """
        ndim_in("DecisionAttention", "inputs", inputs, (3,))
        m, _, d = inputs.shape
        if m != self.num_members or d != self.feature_dim:
            raise ShapeError(
                f"DecisionAttention: inputs have shape {tuple(inputs.shape)}, expected "
                f"(M={self.num_members}, B, D={self.feature_dim})"
            )
        q = self.w_q(inputs)
        k = self.w_k(inputs)
        if detach_peers:
            k_peer = self.w_k(inputs.detach())
            scores = torch.einsum("ibp,jbp->bij", q, k_peer)
            own = (q * k).sum(dim=-1).t()  # (B, M): q_i · k_i with gradient into inputs_i
            scores = torch.where(_eye(m, inputs.device), torch.diag_embed(own), scores)
        else:
            scores = torch.einsum("ibp,jbp->bij", q, k)
        if self.scaled:
            scores = scores / math.sqrt(self.proj_dim)
        if not self.include_self:
            scores = scores.masked_fill(_eye(m, inputs.device), -math.inf)
        return scores.softmax(dim=-1)

    def forward(
        self,
        decisions: torch.Tensor,
        features: torch.Tensor | None = None,
        detach_peers: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``t_i = Σ_j α_ij z_j`` ``(M, B, A)`` and α ``(B, M, M)``.

        Args:
            decisions: ``(M, B, A)`` logits ``z``.
            features: ``(M, B, D)`` features ``h``; required when ``source="features"``.
            detach_peers: detach peers' ``z_j``, ``h_j`` (j ≠ i) in member i's target.
        """
        ndim_in("DecisionAttention", "decisions", decisions, (3,))
        if self.source == "features":
            if features is None:
                raise ShapeError("DecisionAttention: source='features' needs features (M, B, D)")
            ndim_in("DecisionAttention", "features", features, (3,))
            if features.shape[:2] != decisions.shape[:2]:
                raise ShapeError(
                    f"DecisionAttention: features {tuple(features.shape)} and decisions "
                    f"{tuple(decisions.shape)} must share (M, B)"
                )
            alpha = self.attention(features, detach_peers)
        else:
            alpha = self.attention(decisions, detach_peers)
        return attention_group_targets(decisions, alpha, detach_peers), alpha


def decision_loss(
    targets: torch.Tensor, decisions: torch.Tensor, T: float = DEFAULT_T, detach_target: bool = False
) -> torch.Tensor:
    """``L_dec,i = T² · KL(softmax(t_i/T) ‖ softmax(z_i/T))``, batch mean, per member: ``(M,)``.

    Shapes: targets ``(M, B, A)`` (e.g. from ``DecisionAttention`` or ``mean_group_targets``),
    decisions ``(M, B, A)``. ``detach_target=False`` (default) keeps the target's gradient paths
    as built (peers already detached there, α trainable); True detaches the whole target.
    Sum the result for the group's total.
    """
    ndim_in("decision_loss", "decisions", decisions, (3,))
    same_shape("decision_loss", "targets", targets, "decisions", decisions)
    if detach_target:
        targets = targets.detach()
    return kd_loss(decisions, targets, T, reduction="none").mean(dim=1)


def feature_loss(
    features: torch.Tensor, alpha: torch.Tensor, detach_peers: bool = True, detach_alpha: bool = False
) -> torch.Tensor:
    """``L_feat,i = MSE(h_i, Σ_j α_ij h_j)`` per member: ``(M,)`` (mean over B and D).

    Shapes: features ``(M, B, D)``, alpha ``(B, M, M)``. Peers' ``h_j`` (j ≠ i) are detached in
    the target by default; ``detach_alpha`` stops this loss from training the attention.
    """
    ndim_in("feature_loss", "features", features, (3,))
    if detach_alpha:
        alpha = alpha.detach()
    target = attention_group_targets(features, alpha, detach_peers)
    return (features - target).pow(2).mean(dim=(1, 2))


def ramp_weight(step: int | float, ramp_steps: int | float) -> float:
    """Sigmoid-shaped ramp-up ``w = exp(−5 (1 − min(1, step / ramp_steps))²)``; 1 when ``ramp_steps <= 0``."""
    if ramp_steps <= 0:
        return 1.0
    x = 1.0 - min(1.0, max(0.0, step) / ramp_steps)
    return math.exp(-5.0 * x * x)
