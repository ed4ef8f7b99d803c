"""``dml``: deep mutual learning (arXiv 1706.00384), ``L_dec,i = mean_{j≠i} KL(p_j ‖ p_i)`` at T = 1 as in DML
(``p = softmax(z)``, peers detached); the configured temperature is not used."""

from __future__ import annotations

from agents.registry import METHODS, RLMethod
from workbench.distill import dml_loss


class DML(RLMethod):
    def terms(self, i, decisions, features, T, attention):
        return dml_loss(decisions, T=1.0)[i], None, None


METHODS.register("dml", DML())
