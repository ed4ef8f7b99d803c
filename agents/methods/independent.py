"""``independent``: every student learns alone (λ = 0); the baseline of OPD-DA (arXiv 2406.05488)."""

from __future__ import annotations

from agents.registry import METHODS, RLMethod


class Independent(RLMethod):
    distils = False


METHODS.register("independent", Independent())
