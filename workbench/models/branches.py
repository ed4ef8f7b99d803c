"""Auxiliary classifiers attached after the stages of a network (HSAKD arXiv 2107.13715, MixSKD arXiv 2208.05768).

Branch ``k`` (after stage ``k`` of ``K``) is a freshly initialised copy of the later stages ``k+1..K``
followed by global average pooling and a linear layer, so every branch sees a path of the same depth
and resolution schedule as the backbone (HSAKD's design); the branch after the last stage is pooling +
linear only. ``reinit=False`` keeps the copied stages' current weights instead (eTag's branches,
arXiv 2304.10103, are built from the freshly initialised backbone itself). The branches only read the
backbone's stage outputs (taken with forward hooks), so the backbone's own forward is unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from workbench.models.features import get_module


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for p in module.parameters():
        p.requires_grad_(True)


class Branch(nn.Module):
    """``later stages → pool (4-D inputs) → flatten → linear(out_classes)``."""

    def __init__(self, body: nn.Module, width: int, out_classes: int) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, out_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        if x.dim() == 4:
            x = self.pool(x)
        return self.fc(x.flatten(1))


class AuxiliaryBranches(nn.Module):
    """One classifier of ``out_classes`` outputs after each of ``model``'s stages (``stages`` picks which).

    Args:
        model: a zoo model (``stage_names``, ``feature_dim``); it is copied from, not modified.
        out_classes: outputs of every branch (``4·C`` for HSAKD's joint labels, ``C`` for MixSKD).
        stages: indices into ``model.stage_names`` (default: every stage).
        reinit: re-initialise the copied stages (HSAKD, MixSKD) or keep their weights (eTag).
    """

    def __init__(
        self, model: nn.Module, out_classes: int, stages: Sequence[int] | None = None, reinit: bool = True
    ) -> None:
        super().__init__()
        names = tuple(model.stage_names)
        self.stage_indices = tuple(range(len(names)) if stages is None else stages)
        self.paths = tuple(names[i] for i in self.stage_indices)
        width = model.feature_dim
        branches = []
        for i in self.stage_indices:
            later = [copy.deepcopy(get_module(model, n)) for n in names[i + 1 :]]
            body = nn.Sequential(*later)
            if reinit:
                _reset(body)
            branches.append(Branch(body, width, out_classes))
        self.branches = nn.ModuleList(branches)

    def forward(self, stage_outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``stage_outputs[j]`` is the output of stage ``self.paths[j]``; returns one logit tensor per branch."""
        return [b(f) for b, f in zip(self.branches, stage_outputs, strict=True)]
