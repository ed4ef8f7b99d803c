"""Feature extractors of the students' SB3 policies, by name (``EXTRACTORS``), and which one an env gets.

- ``nature``: SB3's NatureCNN (Mnih et al. 2015) for 4×84×84 Atari stacks (SB3's ``CnnPolicy`` default);
- ``minatar``: MinAtar's network (Young & Tian 2019, arXiv 1903.03176, §4): one 3×3 convolution with 16
  filters (stride 1, ReLU) and a fully connected layer of 128 ReLU units. Its 128-d output is the feature
  ``h`` of decision-attention; the policy/value (or Q) heads are single linear layers on it, as in the paper.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from workbench.registry import Registry

EXTRACTORS: Registry[type[BaseFeaturesExtractor]] = Registry("feature extractor")


class MinAtarNet(BaseFeaturesExtractor):
    """``(C, 10, 10)`` MinAtar state → conv 3×3×16 → ReLU → linear 128 → ReLU (arXiv 1903.03176)."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128, filters: int = 16) -> None:
        super().__init__(observation_space, features_dim)
        c, height, width = observation_space.shape
        self.conv = nn.Sequential(nn.Conv2d(c, filters, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(filters * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(obs.float()))


EXTRACTORS.register("nature", NatureCNN)
EXTRACTORS.register("minatar", MinAtarNet)


def policy_for(spec: Any) -> tuple[str, dict[str, Any]]:
    """SB3 policy name and ``policy_kwargs`` of an env: ``spec`` an :class:`~agents.envs.EnvSpec` (or a bool:
    Atari or not). Vectors: MLP; Atari stacks: NatureCNN; MinAtar states: :class:`MinAtarNet` with linear heads."""
    if isinstance(spec, bool):
        return ("CnnPolicy" if spec else "MlpPolicy"), {}
    if getattr(spec, "minatar", False):
        return "CnnPolicy", {"features_extractor_class": EXTRACTORS["minatar"], "net_arch": []}
    return ("CnnPolicy" if spec.atari else "MlpPolicy"), {}
