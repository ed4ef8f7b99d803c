"""CIFAR-style ResNets with BasicBlocks (He et al. 2016, arXiv 1512.03385, section 4.2).

A network of depth 6n+2 has a 3x3 stem, three stages of n BasicBlocks (widths 16/32/64, the
second and third stage start with stride 2), global average pooling and one linear layer.
Where a block changes shape, its shortcut is a 1x1 convolution + BatchNorm (the paper's
"option B", as RepDistiller's CIFAR ResNets do); elsewhere it is the identity:

    block(x) = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))

``resnet8x4`` and ``resnet32x4`` are RepDistiller's (CRD, arXiv 1910.10699) wider variants:
stem of 32 channels, stages 64/128/256. The same class builds the 4-stage CIFAR ResNet-18
(see ``resnet18.py``).

Module layout shared by every model of the zoo (features are taken by path with forward hooks):
``conv1, bn1, relu`` (stem), ``layer1 .. layerK`` (stages; ``layer2.3`` is a block), ``avgpool``,
``flatten`` (the pooled embedding, ``feature_path``), ``fc`` (the head, ``head_path``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workbench.models.features import FeatureModel


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for convolutions, BatchNorm to identity; linears keep PyTorch's init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ``shortcut`` is ``nn.Identity`` when shapes match."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(FeatureModel):
    """ResNet of BasicBlocks for small images: 3x3 stride-1 stem, no max-pool, adaptive average pool.

    ``blocks[i]`` blocks of width ``widths[i]`` in stage ``layer{i+1}``; every stage after the first
    starts with stride 2. Works for any input of at least 1 pixel per side after the strides
    (8x8 inputs included) thanks to the adaptive pooling.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {tuple(blocks)} and widths {tuple(widths)} must be non-empty, same length")
        stem_width = widths[0] if stem_width is None else stem_width
        self.conv1 = conv3x3(in_channels, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        in_planes = stem_width
        names = []
        for i, (n, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, width, stride if j == 0 else 1))
                in_planes = width
            names.append(f"layer{i + 1}")
            self.add_module(names[-1], nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        self.stage_names = tuple(names)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(self.avgpool(x)))


def cifar_resnet(depth: int, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n+2 layers (20, 32, 44, 56, 110, ...), widths 16/32/64."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), (16, 32, 64), num_classes, in_channels)


def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (n=3): about 0.27M parameters for 10 classes."""
    return cifar_resnet(20, num_classes, in_channels)


def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n=5): about 0.46M parameters for 10 classes."""
    return cifar_resnet(32, num_classes, in_channels)


def resnet44(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (n=7): about 0.66M parameters for 10 classes."""
    return cifar_resnet(44, num_classes, in_channels)


def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (n=9): about 0.85M parameters for 10 classes."""
    return cifar_resnet(56, num_classes, in_channels)


def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (n=18): about 1.7M parameters for 10 classes."""
    return cifar_resnet(110, num_classes, in_channels)


def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """RepDistiller's resnet8x4 (arXiv 1910.10699): n=1, stem 32, stages 64/128/256; ~1.23M params (100 cl.)."""
    return CifarResNet((1, 1, 1), (64, 128, 256), num_classes, in_channels, stem_width=32)


def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """RepDistiller's resnet32x4 (arXiv 1910.10699): n=5, stem 32, stages 64/128/256; ~7.43M params (100 cl.)."""
    return CifarResNet((5, 5, 5), (64, 128, 256), num_classes, in_channels, stem_width=32)
