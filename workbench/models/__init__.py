"""Model zoo: build a network by name.

Every model takes ``num_classes`` and ``in_channels`` and exposes, for code that takes features
by module path (see ``workbench.models.features``):

- ``stage_names``: module paths of its stages, e.g. ``("layer1", "layer2", "layer3")``; blocks are
  ``layer1.0``, ``layer1.1``, ... and residual blocks have a ``shortcut`` submodule;
- ``feature_path``: ``"flatten"``, the module whose output is the pooled, flattened embedding;
- ``head_path``: ``"fc"``, the final ``nn.Linear``;
- ``feature_dim``: the embedding width (``fc.in_features``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from workbench.errors import WorkbenchError, unknown
from workbench.models.branches import AuxiliaryBranches, Branch
from workbench.models.features import (
    FeatureHooks,
    FeatureModel,
    features,
    frozen_bn_stats,
    frozen_copy,
    get_module,
    recalibrated_bn,
)
from workbench.models.resnet18 import resnet18
from workbench.models.resnet_cifar import (
    resnet8x4,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from workbench.models.small import mlp, small_cnn
from workbench.models.wrn import wrn_16_2, wrn_40_2

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_2": wrn_16_2,
    "wrn_40_2": wrn_40_2,
    "resnet18": resnet18,
    "small_cnn": small_cnn,
    "mlp": mlp,
}


def model_options(name: str) -> tuple[str, ...]:
    """Extra keyword options that model ``name`` accepts besides ``num_classes`` and ``in_channels``."""
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    params = inspect.signature(MODELS[name]).parameters
    return tuple(p for p in params if p not in ("num_classes", "in_channels"))


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (a key of ``MODELS``) for ``num_classes`` classes and ``in_channels`` inputs.

    ``kwargs`` are the model's own options (``model_options(name)``), e.g. ``dropout`` for WRNs or
    ``hidden``/``input_size`` for the MLP. Unknown names or options raise ``WorkbenchError``.
    """
    options = model_options(name)
    for key in kwargs:
        if key not in options:
            valid = ", ".join(options) if options else "none"
            raise WorkbenchError(f"model '{name}' has no option '{key}'; valid options: {valid}")
    if num_classes < 1 or in_channels < 1:
        raise WorkbenchError(
            f"model '{name}' needs num_classes >= 1 and in_channels >= 1, got {num_classes} and {in_channels}"
        )
    try:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except ValueError as err:  # a bad option value, e.g. the wrong number of widths
        raise WorkbenchError(f"model '{name}': {err}") from None


__all__ = [
    "MODELS",
    "AuxiliaryBranches",
    "Branch",
    "FeatureHooks",
    "FeatureModel",
    "build_model",
    "features",
    "frozen_bn_stats",
    "frozen_copy",
    "get_module",
    "model_options",
    "recalibrated_bn",
]
