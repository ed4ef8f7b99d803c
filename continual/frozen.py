"""The template of the frozen-backbone methods (NCM, FeCAM, FeTrIL, ACIL): learn the backbone on the first task,
freeze it, and grow a classifier over its features.

Task 0 trains the backbone and its head with cross-entropy, with the same optimizer, epochs and batch size as
every method (Naive's first task). Then every backbone parameter is frozen (``requires_grad=False``; BatchNorm
statistics stop moving since no training forward runs again) and later tasks run no optimizer step: the
method's classifier is fitted on the frozen embeddings of each task's unaugmented training images, by Avalanche
plugins (NCM, FeCAM) or by the method itself (:meth:`FrozenBackbone.fit`). The eval output is padded to all
classes (``UNSEEN`` for classes the classifier has not been given), and the seen-class mask applies as for
every method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.models import embed
from continual.plugins import UNSEEN
from continual.template import WorkbenchTemplate


class Embedder(nn.Module):
    """The backbone's pooled embedding (``backbone.feature_path``) as a module (Avalanche's feature extractor)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return embed(self.backbone, x)[1]


def freeze(module: nn.Module) -> None:
    """No parameter of ``module`` trains any more."""
    for p in module.parameters():
        p.requires_grad_(False)


class FrozenBackbone(WorkbenchTemplate):
    """Trains the backbone on task 0 only; subclasses give the eval classifier (``model`` is an Avalanche
    ``TrainEvalModel`` or a module with ``feature_extractor``) and, unless plugins do it, :meth:`fit`."""

    def __init__(self, *, model: nn.Module, backbone: nn.Module, **kwargs: Any) -> None:
        super().__init__(model=model, freeze_bn=False, **kwargs)
        self.backbone = backbone
        self.frozen = False

    def make_optimizer(self, **kwargs: Any) -> None:
        if not self.frozen:  # frozen: no parameter trains, the optimizer is never stepped
            super().make_optimizer(**kwargs)

    def training_epoch(self, **kwargs: Any) -> None:
        if not self.frozen:
            super().training_epoch(**kwargs)

    def forward(self) -> torch.Tensor:
        out = super().forward()
        if self.is_training or out.shape[1] >= self.num_classes:
            return out
        pad = torch.full((len(out), self.num_classes - out.shape[1]), UNSEEN, device=out.device, dtype=out.dtype)
        return torch.cat([out, pad], dim=1)

    def _after_training_exp(self, **kwargs: Any) -> None:
        if not self.frozen:
            freeze(self.backbone)
            self.frozen = True
        self.fit()
        super()._after_training_exp(**kwargs)  # the plugins' after_training_exp (NCM/FeCAM updates) run here

    def fit(self) -> None:
        """Fit the classifier on the current task's frozen features (methods whose plugins do it: nothing)."""

    def state(self) -> dict[str, Any]:
        return {"backbone": self.backbone.state_dict(), "frozen": self.frozen}

    def load_state(self, state: dict[str, Any]) -> None:
        self.backbone.load_state_dict(state["backbone"])
        if state["frozen"]:
            freeze(self.backbone)
            self.frozen = True
