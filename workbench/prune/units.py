"""Residual-unit removal (SGLP, METHODS.md §4): find the blocks that may go, replace them by identity.

A unit is removable when its output has the shape of its input, so that ``nn.Identity`` (the skip
connection alone) can stand in for it. Shapes are read from one forward pass on zeros with
forward hooks; stems and shape-changing blocks are anchors that stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.features import get_module, unwrap

Shape = tuple[int, ...]


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, list | tuple) and obj and isinstance(obj[0], torch.Tensor):
        return obj[0]
    return None


def unit_shapes(model: nn.Module, paths: Iterable[str], input_shape: Sequence[int]) -> dict[str, tuple[Shape, Shape]]:
    """``{path: (input shape, output shape)}`` of the modules at ``paths`` for one sample of ``input_shape``.

    Shapes include the batch dimension (1). Runs the model once on zeros in eval mode without
    gradients; module modes are restored. A module that is not called in the forward is missing.
    """
    root = unwrap(model)
    modules = {p: get_module(root, p) for p in paths}
    shapes: dict[str, tuple[Shape, Shape]] = {}
    handles = []
    for path, module in modules.items():

        def hook(mod: nn.Module, args: Any, out: Any, path: str = path) -> None:
            x, y = _first_tensor(args), _first_tensor(out)
            if x is not None and y is not None:
                shapes[path] = (tuple(x.shape), tuple(y.shape))

        handles.append(module.register_forward_hook(hook))
    tensors = [*root.parameters(), *root.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    modes = [(m, m.training) for m in root.modules()]
    root.eval()
    try:
        with torch.no_grad():
            root(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return shapes


def residual_units(model: nn.Module, input_shape: Sequence[int], candidates: Iterable[str] | None = None) -> list[str]:
    """Module paths of the removable units, in forward order of ``model.named_modules()``.

    Candidates are ``candidates`` when given, otherwise every module with a ``shortcut`` attribute
    (the zoo's residual blocks). A candidate is kept when its input and output shapes match for
    one sample of ``input_shape`` (e.g. ``(3, 32, 32)``).
    """
    root = unwrap(model)
    if candidates is None:
        paths = [name for name, m in root.named_modules() if name and hasattr(m, "shortcut")]
    else:
        paths = list(dict.fromkeys(candidates))
    shapes = unit_shapes(root, paths, input_shape)
    return [p for p in paths if p in shapes and shapes[p][0] == shapes[p][1]]


def remove_units(model: nn.Module, paths: Iterable[str], input_shape: Sequence[int]) -> nn.Module:
    """Replace the units at ``paths`` by ``nn.Identity`` in place and return the model.

    Every unit's input and output shapes are checked first (one forward on zeros of one sample of
    ``input_shape``); a unit that changes the shape, or is never called, is refused with a
    ``WorkbenchError`` and nothing is changed.
    """
    root = unwrap(model)
    paths = list(dict.fromkeys(paths))
    if "" in paths:
        raise WorkbenchError("cannot remove the whole model; give the paths of residual units, e.g. 'layer1.0'")
    shapes = unit_shapes(root, paths, input_shape)
    for p in paths:
        if p not in shapes:
            raise WorkbenchError(f"unit '{p}' is not called in the forward pass, so it cannot be removed; drop it")
        x, y = shapes[p]
        if x != y:
            raise WorkbenchError(
                f"unit '{p}' changes the shape {x} -> {y}, so identity cannot replace it; "
                "remove only units listed by residual_units()"
            )
    for p in paths:
        parent_path, _, name = p.rpartition(".")
        setattr(get_module(root, parent_path), name, nn.Identity())
    return model
