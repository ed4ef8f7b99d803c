"""Small models for quick experiments on Fashion-MNIST (28x28) and sklearn digits (8x8).

Both keep the zoo's module layout: stages ``layer1..``, the embedding at ``flatten`` and the
head at ``fc``, so feature hooks, distillation losses and pruning tools treat them like the
ResNets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workbench.models.features import FeatureModel
from workbench.models.resnet_cifar import conv3x3, init_weights


class SmallCNN(FeatureModel):
    """Three 3x3 conv-BN-ReLU stages (the first two with stride 2), average pool, linear head.

    Strided convolutions instead of stride 1 + max-pool make training about 3x cheaper on a CPU:
    with the default widths 16/32/64 one 28x28 grey image costs about 1.2M MACs (stages at
    14x14, 7x7, 7x7). Any input size works (8x8 digits: 4x4, 2x2, 2x2).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"SmallCNN takes 3 widths, got {tuple(widths)}")
        w1, w2, w3 = widths
        self.layer1 = nn.Sequential(conv3x3(in_channels, w1, stride=2), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer2 = nn.Sequential(conv3x3(w1, w2, stride=2), nn.BatchNorm2d(w2), nn.ReLU())
        self.layer3 = nn.Sequential(conv3x3(w2, w3), nn.BatchNorm2d(w3), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)
        self.stage_names = ("layer1", "layer2", "layer3")
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


class MLP(FeatureModel):
    """Image -> ``stem`` (adaptive average pool to ``input_size`` x ``input_size``, flatten) -> hidden
    Linear-ReLU stages ``layer1..`` -> ``flatten`` (a no-op on (B, D), kept for the uniform
    ``feature_path``) -> ``fc``.

    The default ``input_size=8`` is exact for 8x8 digits; any other image size is average-pooled
    to 8x8. Pass ``input_size=28`` to use every Fashion-MNIST pixel. With ``hidden=()`` the model
    is a linear classifier on the pooled pixels.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden: Sequence[int] = (256, 128),
        input_size: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.AdaptiveAvgPool2d(input_size), nn.Flatten())
        width = in_channels * input_size * input_size
        names = []
        for i, h in enumerate(hidden):
            names.append(f"layer{i + 1}")
            self.add_module(names[-1], nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)))
            width = h
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)
        self.stage_names = tuple(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(x))


def small_cnn(num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)) -> SmallCNN:
    """Three-stage CNN for 28x28 / 8x8 images."""
    return SmallCNN(num_classes, in_channels, widths)


def mlp(
    num_classes: int,
    in_channels: int = 3,
    hidden: Sequence[int] = (256, 128),
    input_size: int = 8,
    dropout: float = 0.0,
) -> MLP:
    """Multi-layer perceptron on (pooled) pixels; see ``MLP``."""
    return MLP(num_classes, in_channels, hidden, input_size, dropout)
