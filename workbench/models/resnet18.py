"""CIFAR ResNet-18 (He et al. 2016, arXiv 1512.03385), the variant used for 32x32 images.

Four stages of two BasicBlocks, widths 64/128/256/512, a 3x3 stride-1 stem and no max-pool
(the ImageNet 7x7 stride-2 stem and max-pool would leave 1x1 maps at 32x32); the embedding is
the 512-d average-pooled output of ``layer4``. About 11.2M parameters for 100 classes. This is
the backbone of eTag (arXiv 2304.10103) and of most exemplar-free CIL work.
"""

from __future__ import annotations

from workbench.models.resnet_cifar import CifarResNet


def resnet18(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-18: stages ``layer1..layer4`` of 2 blocks each, ``feature_dim`` = 512."""
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)
