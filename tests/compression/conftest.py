"""Shared fixtures of the compression tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.models.resnet_cifar import CifarResNet


@pytest.fixture(scope="module")
def net() -> CifarResNet:
    """A small resnet14 (widths 8/16/32, 1 input channel) in eval mode with non-trivial BatchNorm statistics and
    affine parameters, so that masking, pruning and folding must handle them; the same weights in every module."""
    torch.manual_seed(0)
    model = CifarResNet((2, 2, 2), (8, 16, 32), num_classes=10, in_channels=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()
