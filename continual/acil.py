"""ACIL: analytic class-incremental learning (Zhuang et al., NeurIPS 2022, arXiv 2205.14922).

The backbone is trained on the first task with back-propagation and frozen
(:class:`~continual.frozen.FrozenBackbone`). Its embedding ``f`` goes through a fixed random buffer layer
``x = ReLU(f·W_B)`` (``W_B`` of shape ``D × B`` drawn once, ``B = acil.buffer``), and the classifier
``Ŵ`` (``B × C`` over all classes, one-hot targets ``Y``) is the ridge least-squares solution on every
feature seen so far, ``Ŵ = (Σ_t X_tᵀX_t + γI)⁻¹ Σ_t X_tᵀY_t``, computed recursively without old data
(the paper's Theorem 1, a block recursive least squares):

    ``R_0 = (X_0ᵀX_0 + γI)⁻¹``, ``Ŵ_0 = R_0 X_0ᵀ Y_0``;
    ``R_t = R_{t−1} − R_{t−1} X_tᵀ (I + X_t R_{t−1} X_tᵀ)⁻¹ X_t R_{t−1}``;
    ``Ŵ_t = Ŵ_{t−1} + R_t X_tᵀ (Y_t − X_t Ŵ_{t−1})``.

The recursion is exactly the joint solution (tests: to 1e-6 in float64); ``R`` and ``Ŵ`` are kept in float64.
Prediction: ``argmax x·Ŵ`` over the seen classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.frozen import Embedder, FrozenBackbone
from continual.registry import CIL_METHODS, CILContext, CILMethod
from workbench.config import opt


@dataclasses.dataclass
class ACILConfig:
    """ACIL keys."""

    buffer: int = opt(2048, "width B of the random-projection buffer (paper: 8192 on ResNets; CPU-sized here)", ge=1)
    gamma: float = opt(1.0, "ridge regularisation γ of the least-squares classifier", gt=0)


class RecursiveLeastSquares:
    """Ridge regression ``W = (Σ XᵀX + γI)⁻¹ Σ XᵀY`` updated block by block (module doc), in float64."""

    def __init__(self, dim: int, outputs: int, gamma: float, device: Any = "cpu") -> None:
        self.R = torch.eye(dim, dtype=torch.float64, device=device) / gamma
        self.W = torch.zeros(dim, outputs, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Absorb one block ``x (N, dim)``, ``y (N, outputs)``."""
        x, y = x.double(), y.double()
        rx = self.R @ x.T
        k = torch.linalg.solve(torch.eye(len(x), dtype=x.dtype, device=x.device) + x @ rx, rx.T)
        self.R = self.R - rx @ k
        self.R = (self.R + self.R.T) / 2
        self.W = self.W + self.R @ x.T @ (y - x @ self.W)


class ACILNet(nn.Module):
    """Backbone (trained on task 0 with its head) + the random buffer and the analytic classifier (eval)."""

    def __init__(self, backbone: nn.Module, num_classes: int, buffer: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_extractor = Embedder(backbone)
        self.register_buffer("projection", torch.randn(backbone.feature_dim, buffer) / backbone.feature_dim**0.5)
        self.register_buffer("weight", torch.zeros(buffer, num_classes, dtype=torch.float64))

    def expand(self, f: torch.Tensor) -> torch.Tensor:
        """``x = ReLU(f·W_B)``."""
        return F.relu(f @ self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.backbone(x)
        return (self.expand(self.feature_extractor(x)).double() @ self.weight).float()


class ACIL(FrozenBackbone):
    """ACIL as an Avalanche strategy (module doc)."""

    def __init__(self, *, model: ACILNet, acil_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=model, backbone=model.backbone, **kwargs)
        self.cfg = acil_cfg
        self.rls = RecursiveLeastSquares(acil_cfg.buffer, self.num_classes, acil_cfg.gamma, self.device)

    def fit(self) -> None:
        feats, labels = self.train_features(self.model, self.model.feature_extractor)
        x = self.model.expand(feats)
        self.rls.update(x, F.one_hot(labels, self.num_classes))
        self.model.weight.copy_(self.rls.W)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "net": self.model.state_dict(), "R": self.rls.R.cpu(), "W": self.rls.W.cpu()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.model.load_state_dict(state["net"])
        self.rls.R, self.rls.W = state["R"].to(self.device), state["W"].to(self.device)


class ACILMethod(CILMethod):
    section = "acil"
    keys = ACILConfig
    min_first_task = 2
    paper = "arXiv 2205.14922"

    def build(self, ctx: CILContext) -> ACIL:
        model = ACILNet(ctx.backbone, ctx.stream.num_classes, ctx.keys.buffer)
        return ACIL(model=model, acil_cfg=ctx.keys, **ctx.template_kwargs())


CIL_METHODS.register("acil", ACILMethod())
