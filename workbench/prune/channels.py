"""Physical channel removal through Torch-Pruning's dependency graph (Fang et al. 2023, arXiv 2301.12900).

A *plan* maps the module path of a convolution (or linear layer) to the indices of its output
channels to remove, in the numbering of the unpruned model. Removing an output channel also
removes everything that is coupled to it: the BatchNorm channel after it, the input channel of
every consumer, and, through residual additions or concatenations, the matching channels of
other layers. Torch-Pruning's ``DependencyGraph`` finds these couplings by tracing one forward.

Layers coupled through a residual add share one channel space: a plan may name several of
them (their removals are merged into one group) but the stems and the last convolution of
residual blocks then lose the same channels everywhere. ``independent_convs`` lists the
convolutions whose output channels are coupled to no other convolution's output (in CIFAR
ResNets: the first conv of each block, the block's internal channels), the safe default for
per-layer filter pruning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.features import get_module, unwrap

Plan = dict[str, list[int]]
_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` on ``example_input`` (eval mode, so BatchNorm statistics are not touched)."""
    root = unwrap(model)
    modes = [(m, m.training) for m in root.modules()]
    root.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(root, example_inputs=example_input, verbose=False)
    finally:
        for m, training in modes:
            m.training = training


def _out_pruner(dg: tp.DependencyGraph, module: nn.Module):
    return dg.get_pruner_of_module(module).prune_out_channels


def _out_channels(dg: tp.DependencyGraph, module: nn.Module) -> int:
    return int(dg.get_out_channels(module))


def channel_group(dg: tp.DependencyGraph, module: nn.Module, idxs: Sequence[int]) -> tp.Group:
    """The Torch-Pruning group that removes output channels ``idxs`` of ``module`` and all coupled channels."""
    return dg.get_pruning_group(module, _out_pruner(dg, module), list(idxs))


def coupled_layers(dg: tp.DependencyGraph, module: nn.Module) -> list[nn.Module]:
    """Conv/linear layers whose output channels are pruned together with ``module``'s (itself first)."""
    group = channel_group(dg, module, range(_out_channels(dg, module)))
    found = [module]
    for dep, _ in group:
        target = dep.target.module
        if isinstance(target, _PRUNABLE) and dg.is_out_channel_pruning_fn(dep.handler) and target not in found:
            found.append(target)
    return found


def _reaches_output(group: tp.Group) -> bool:
    return any(dep.target.type == tp.ops.OPTYPE.OUTPUT for dep, _ in group)


def independent_convs(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Paths of the ``nn.Conv2d`` layers (not depthwise) whose output channels can be pruned alone.

    A conv qualifies when its dependency group removes the output channels of no other conv or
    linear layer and does not reach the model's output. In the zoo's residual networks these are
    the convs inside blocks (``layerX.Y.conv1``); stems, block outputs and shortcuts share
    channels through the residual additions and are excluded.
    """
    root = unwrap(model)
    dg = dependency_graph(root, example_input)
    paths = []
    for name, m in root.named_modules():
        if not isinstance(m, nn.Conv2d) or (m.groups > 1 and m.groups == m.out_channels) or m not in dg.module2node:
            continue
        group = channel_group(dg, m, range(m.out_channels))
        if len(coupled_layers(dg, m)) == 1 and not _reaches_output(group):
            paths.append(name)
    return paths


def _check_plan(root: nn.Module, dg: tp.DependencyGraph, plan: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    clean = {}
    for path, idxs in plan.items():
        module = get_module(root, path)
        if not isinstance(module, _PRUNABLE):
            raise WorkbenchError(f"'{path}' is a {type(module).__name__}; channel plans name Conv or Linear layers")
        if module not in dg.module2node:
            raise WorkbenchError(f"'{path}' is not used in the forward pass, so its channels cannot be removed")
        n = _out_channels(dg, module)
        unique = sorted({int(i) for i in idxs})
        if unique and (unique[0] < 0 or unique[-1] >= n):
            raise WorkbenchError(f"channel indices for '{path}' must be in 0..{n - 1}, got {unique}")
        if len(unique) >= n:
            raise WorkbenchError(f"the plan removes all {n} output channels of '{path}'; keep at least one")
        if unique:
            clean[path] = unique
    return clean


def prune_channels(model: nn.Module, example_input: torch.Tensor, plan: Mapping[str, Sequence[int]]) -> nn.Module:
    """Physically remove output channels of the layers in ``plan`` (in place) and return the model.

    ``plan[path]`` lists output-channel indices of the unpruned layer at ``path``. Entries whose
    layers are coupled (e.g. two convs feeding one residual add) are merged into one group with
    the union of their channels, mapped into the first entry's numbering. Raises
    ``WorkbenchError`` for unknown paths, indices out of range, or a plan that would remove every
    channel of a layer.
    """
    root = unwrap(model)
    dg = dependency_graph(root, example_input)
    plan = _check_plan(root, dg, plan)
    owner: dict[nn.Module, str] = {}
    merged: dict[str, set[int]] = {}
    for path, idxs in plan.items():
        module = get_module(root, path)
        if module in owner:
            head = owner[module]
            head_module = get_module(root, head)
            for dep, mapped in channel_group(dg, module, idxs):
                if dep.target.module is head_module and dg.is_out_channel_pruning_fn(dep.handler):
                    merged[head].update(int(i) for i in mapped)
            continue
        for layer in coupled_layers(dg, module):
            owner.setdefault(layer, path)
        merged[path] = set(idxs)
    for path, idxs in merged.items():
        module = get_module(root, path)
        group = channel_group(dg, module, sorted(idxs))
        if not dg.check_pruning_group(group):
            raise WorkbenchError(f"the plan removes every channel of a layer coupled to '{path}'; prune fewer channels")
        group.prune()
    return model


def plan_from_masks(masks: Mapping[str, torch.Tensor]) -> Plan:
    """Plan from boolean masks per layer, ``True`` = channel removed (as the mask schedules keep them)."""
    return {path: torch.nonzero(m.bool().flatten()).flatten().tolist() for path, m in masks.items()}


def plan_from_scores(scores: Mapping[str, torch.Tensor], ratio: float, scope: str = "layer") -> Plan:
    """Plan removing the lowest-scoring channels: ``floor(ratio · C_l)`` per layer (``scope="layer"``),
    or the ``floor(ratio · Σ C_l)`` lowest over all layers (``scope="global"``), keeping at least one
    channel per layer. Ties go to the lower index.
    """
    if not 0.0 <= ratio < 1.0:
        raise WorkbenchError(f"pruning ratio must be in [0, 1), got {ratio}")
    if scope == "layer":
        plan = {}
        for path, s in scores.items():
            k = min(int(ratio * s.numel()), s.numel() - 1)
            plan[path] = sorted(torch.argsort(s.flatten(), stable=True)[:k].tolist())
        return plan
    if scope != "global":
        raise WorkbenchError(f"unknown pruning scope '{scope}'; valid: global, layer")
    entries = [(float(v), path, i) for path, s in scores.items() for i, v in enumerate(s.flatten().tolist())]
    entries.sort(key=lambda e: e[0])
    budget = int(ratio * len(entries))
    plan: Plan = {path: [] for path in scores}
    for _, path, i in entries:
        if budget == 0:
            break
        if len(plan[path]) < scores[path].numel() - 1:
            plan[path].append(i)
            budget -= 1
    return {path: sorted(idxs) for path, idxs in plan.items()}
