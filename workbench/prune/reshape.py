"""Resize a freshly built model's layers so that a pruned model's ``state_dict`` loads into it.

A pruned model is saved as a plain ``state_dict`` (tensors only, loadable with
``torch.load(weights_only=True)``); its architecture is recovered by building the unpruned model by
name and shrinking each convolution, BatchNorm and linear layer to the shapes stored in the
state dict. Only sizes change: the new parameters are placeholders until ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from workbench.errors import WorkbenchError


def _placeholder(like: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


def _resize_conv(m: _ConvNd, weight_shape: torch.Size, name: str) -> None:
    out_c, in_per_group = int(weight_shape[0]), int(weight_shape[1])
    if tuple(weight_shape[2:]) != tuple(m.weight.shape[2:]):
        raise WorkbenchError(
            f"'{name}' has kernel {tuple(m.weight.shape[2:])}, the checkpoint {tuple(weight_shape[2:])}"
        )
    depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    groups = out_c if depthwise else m.groups
    if out_c % groups:
        raise WorkbenchError(f"'{name}': {out_c} output channels cannot be split into {groups} groups")
    m.out_channels, m.in_channels, m.groups = out_c, in_per_group * groups, groups
    m.weight = nn.Parameter(_placeholder(m.weight, weight_shape), requires_grad=m.weight.requires_grad)
    if m.bias is not None:
        m.bias = nn.Parameter(_placeholder(m.bias, torch.Size([out_c])), requires_grad=m.bias.requires_grad)


def _resize_linear(m: nn.Linear, weight_shape: torch.Size) -> None:
    m.out_features, m.in_features = int(weight_shape[0]), int(weight_shape[1])
    m.weight = nn.Parameter(_placeholder(m.weight, weight_shape), requires_grad=m.weight.requires_grad)
    if m.bias is not None:
        m.bias = nn.Parameter(_placeholder(m.bias, torch.Size([m.out_features])), requires_grad=m.bias.requires_grad)


def _resize_bn(m: _BatchNorm, n: int) -> None:
    m.num_features = n
    for pname in ("weight", "bias"):
        p = getattr(m, pname)
        if p is not None:
            setattr(m, pname, nn.Parameter(_placeholder(p, torch.Size([n])), requires_grad=p.requires_grad))
    for bname in ("running_mean", "running_var"):
        b = getattr(m, bname)
        if b is not None:
            setattr(m, bname, _placeholder(b, torch.Size([n])))


def fit_modules_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Resize Conv/BatchNorm/Linear modules of ``model`` in place to the shapes in ``state_dict``.

    For each such module whose ``<path>.weight`` (BatchNorm: ``<path>.running_mean`` when it has
    no affine weight) has another shape in ``state_dict``, the parameters and buffers are replaced
    by zero tensors of the stored shapes and the size attributes (``in_channels``/``out_channels``,
    ``in_features``/``out_features``, ``num_features``, and ``groups`` for depthwise convolutions)
    are updated. Returns ``model``; follow with ``model.load_state_dict(state_dict)``.
    """
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, _ConvNd | nn.Linear):
            shape = state_dict.get(prefix + "weight", None)
            if shape is None or shape.shape == m.weight.shape:
                continue
            if shape.dim() != m.weight.dim():
                raise WorkbenchError(f"'{name}' weight has {m.weight.dim()} dims, the checkpoint {shape.dim()}")
            if isinstance(m, nn.Linear):
                _resize_linear(m, shape.shape)
            else:
                _resize_conv(m, shape.shape, name)
        elif isinstance(m, _BatchNorm):
            key = prefix + ("weight" if m.weight is not None else "running_mean")
            stored = state_dict.get(key, None)
            if stored is not None and stored.numel() != m.num_features:
                _resize_bn(m, stored.numel())
    return model
