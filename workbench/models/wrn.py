"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis 2016, arXiv 1605.07146).

Depth d = 6n+4: a 3x3 stem of 16 channels, three stages of n pre-activation blocks of widths
16k/32k/64k (the second and third stage start with stride 2), a final BN-ReLU, global average
pooling and one linear layer. A pre-activation block (He et al. 2016, arXiv 1603.05027) is

    pre = relu(bn1(x));  out = conv2(dropout(relu(bn2(conv1(pre)))))
    block(x) = out + x                 when the shape is kept (``shortcut`` is ``nn.Identity``)
    block(x) = out + shortcut(pre)     otherwise (``shortcut`` is a 1x1 ``nn.Conv2d``, no BN)

Stage outputs are therefore not activated; ``bn_final`` and ``relu`` follow ``layer3``.
WRN-40-2 has about 2.2M parameters and WRN-16-2 about 0.7M (10 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.models.features import FeatureModel
from workbench.models.resnet_cifar import conv3x3, init_weights


class WideBlock(nn.Module):
    """Pre-activation block of two 3x3 convolutions with optional dropout between them."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(planes, planes)
        self.keeps_shape = stride == 1 and in_planes == planes
        self.shortcut: nn.Module
        if self.keeps_shape:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + self.shortcut(x if self.keeps_shape else pre)


class WideResNet(FeatureModel):
    """WRN-depth-widen_factor with the zoo's module layout (``layer1..3``, ``flatten``, ``fc``)."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = conv3x3(in_channels, 16)
        in_planes = 16
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(WideBlock(in_planes, width, stride if j == 0 else 1, dropout))
                in_planes = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        self.stage_names = ("layer1", "layer2", "layer3")
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn_final(x))
        return self.fc(self.flatten(self.avgpool(x)))


def wrn_16_2(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-16-2: n=2 blocks per stage, widths 32/64/128."""
    return WideResNet(16, 2, num_classes, in_channels, dropout)


def wrn_40_2(num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-40-2: n=6 blocks per stage, widths 32/64/128."""
    return WideResNet(40, 2, num_classes, in_channels, dropout)
