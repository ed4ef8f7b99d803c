"""Un-squared L2 embedding distance (eTag, arXiv 2304.10103; IR, arXiv 2403.16221)."""

from __future__ import annotations

from typing import Literal

import torch

from workbench.distill._checks import ndim_in, same_shape
from workbench.errors import unknown


def embedding_distance(
    f_new: torch.Tensor,
    f_old: torch.Tensor,
    reduction: Literal["frobenius", "per_sample_mean"] = "frobenius",
) -> torch.Tensor:
    """Distance between the new and the old model's embeddings of one batch, ``(B, D)`` both.

    ``"frobenius"`` (default, the eTag/IR term): ``‖F_new − F_old‖_F = sqrt(Σ_b Σ_d (F_new − F_old)²_bd)``,
    one un-squared norm over the whole batch (not squared, not averaged per sample).
    ``"per_sample_mean"``: ``(1/B) Σ_b ‖f_new,b − f_old,b‖₂``.
    ``f_old`` is not detached here (the old model is frozen by the caller).
    """
    ndim_in("embedding_distance", "f_new", f_new, (2,))
    same_shape("embedding_distance", "f_new", f_new, "f_old", f_old)
    diff = f_new - f_old
    if reduction == "frobenius":
        return torch.linalg.norm(diff)
    if reduction == "per_sample_mean":
        return torch.linalg.vector_norm(diff, dim=1).mean()
    raise unknown("reduction", reduction, ("frobenius", "per_sample_mean"))
