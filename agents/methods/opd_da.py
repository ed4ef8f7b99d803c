"""``opd-da``: decision-attention targets (OPD-DA, arXiv 2406.05488; OKDDip-style attention, arXiv 1912.00350).

``α = DecisionAttention(h)`` (or of z), ``t_i = Σ_j α_ij z_j``, ``L_dec,i = T²·KL(softmax(t_i/T) ‖ softmax(z_i/T))``,
``L_feat,i = MSE(h_i, Σ_j α_ij h_j)``; peers' z_j, h_j are constants, W_q and W_k learn through α.
"""

from __future__ import annotations

from agents.registry import METHODS, RLMethod
from workbench.distill import decision_loss, feature_loss


class OPDDA(RLMethod):
    attention = True

    def terms(self, i, decisions, features, T, attention):
        targets, alpha = attention(decisions, features)
        l_dec = decision_loss(targets[i : i + 1], decisions[i : i + 1], T=T)[0]
        return l_dec, feature_loss(features, alpha)[i], alpha


METHODS.register("opd-da", OPDDA())
