"""Networks of the CIL methods, built around a ``workbench.models`` backbone.

- :func:`embed`: logits and the pooled embedding of a backbone in one forward (forward hooks, no rewriting).
- :class:`RotationBranches` / :class:`ETagNet`: eTag's auxiliary rotation branches (arXiv 2304.10103, after
  HSAKD arXiv 2107.13715): stage ``i`` of the backbone feeds a branch made of deep copies of the stages after
  it, a global pool and a linear layer with ``4·C`` outputs (joint labels ``4·y + r``); the last stage feeds a
  pool + linear head only.
- :class:`FeatureCVAE`: eTag's conditional VAE over embeddings. Encoder ``[f ‖ onehot(y)] → h → h → (μ, log σ²)``,
  decoder ``[z ‖ onehot(y)] → h → h → D`` with a ReLU output (embeddings are post-ReLU averages).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distill.rotation import NUM_ROTATIONS
from workbench.models import FeatureHooks, get_module


def embed(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, f)`` of ``backbone`` on ``x``; ``f`` is the output at ``backbone.feature_path``."""
    with FeatureHooks(backbone, [backbone.feature_path]) as feats:
        logits = backbone(x)
        return logits, feats[backbone.feature_path]


class PoolFlatten(nn.Module):
    """Global average pool of ``(B, C, H, W)`` maps to ``(B, C)``; ``(B, D)`` passes through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class RotationBranches(nn.Module):
    """One auxiliary branch per backbone stage; branch ``i`` maps stage ``i``'s output to ``(B, R·C)`` logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_rotations: int = NUM_ROTATIONS) -> None:
        super().__init__()
        stages = list(backbone.stage_names)
        if not stages:
            raise ValueError(f"{type(backbone).__name__} exposes no stage_names; eTag needs its stages")
        self.stage_names = tuple(stages)
        branches = []
        for i in range(len(stages)):
            rest = [copy.deepcopy(get_module(backbone, s)) for s in stages[i + 1 :]]
            head = nn.Linear(backbone.feature_dim, num_rotations * num_classes)
            branches.append(nn.Sequential(*rest, PoolFlatten(), head))
        self.branches = nn.ModuleList(branches)

    def forward(self, stage_outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(h) for branch, h in zip(self.branches, stage_outputs, strict=True)]


class ETagNet(nn.Module):
    """Backbone (one head over all classes) plus rotation branches; ``forward`` is the main head's logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_rotations: int = NUM_ROTATIONS) -> None:
        super().__init__()
        self.backbone = backbone
        self.aux = RotationBranches(backbone, num_classes, num_rotations)

    @property
    def head(self) -> nn.Linear:
        return get_module(self.backbone, self.backbone.head_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(logits (B, C), embedding (B, D), [aux logits (B, R·C) per stage])`` in one backbone pass."""
        paths = [*self.aux.stage_names, self.backbone.feature_path]
        with FeatureHooks(self.backbone, paths) as feats:
            logits = self.backbone(x)
            stage_out = [feats[s] for s in self.aux.stage_names]
            f = feats[self.backbone.feature_path]
        return logits, f, self.aux(stage_out)


class IRNet(nn.Module):
    """IR's network: the backbone's embedding and a transient linear head (replaced every task)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head: nn.Module = nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return embed(self.backbone, x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class FeatureCVAE(nn.Module):
    """Conditional VAE generating embeddings of a class: ``G(z, y)`` with ``z ~ N(0, I)``."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 512, latent: int = 200) -> None:
        super().__init__()
        self.num_classes, self.latent = num_classes, latent
        self.encoder = nn.Sequential(
            nn.Linear(feature_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent + num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, feature_dim),
            nn.ReLU(),
        )

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).float()

    def encode(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(torch.cat([f, self._onehot(y)], dim=1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, self._onehot(y)], dim=1))

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction, μ, log σ²)`` with the reparameterised ``z = μ + σ·ε``."""
        mu, logvar = self.encode(f, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z, y), mu, logvar

    def sample(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Generated embeddings of classes ``y`` (``z`` drawn from N(0, I) unless given)."""
        if z is None:
            z = torch.randn(len(y), self.latent, device=y.device)
        return self.decode(z, y)
