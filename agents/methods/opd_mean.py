"""``opd-mean``: target = the group's mean decision (OPD-DA's baseline, arXiv 2406.05488).

``t_i = (1/M) Σ_j z_j`` (peers detached), ``L_dec,i = T²·KL(softmax(t_i/T) ‖ softmax(z_i/T))``; no feature term.
"""

from __future__ import annotations

from agents.registry import METHODS, RLMethod
from workbench.distill import decision_loss, mean_group_targets


class OPDMean(RLMethod):
    def terms(self, i, decisions, features, T, attention):
        targets = mean_group_targets(decisions)
        return decision_loss(targets[i : i + 1], decisions[i : i + 1], T=T)[0], None, None


METHODS.register("opd-mean", OPDMean())
