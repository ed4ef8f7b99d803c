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


# --- coupled groups (scope=all) ---------------------------------------------------------------------------

Groups = dict[str, list[str]]  # head path -> paths of the conv/linear layers sharing its output channels
SCOPES = ("internal", "all")


def prunable_groups(model: nn.Module, example_input: torch.Tensor, scope: str = "internal") -> Groups:
    """The channel groups a filter method may prune, as ``{head: members}`` (head first among its members).

    ``scope="internal"``: every ``independent_convs`` layer alone (the block-internal channels).
    ``scope="all"``: every group of coupled output channels of Torch-Pruning's dependency graph (DepGraph,
    arXiv 2301.12900): the internal convs, and per stage the residual stream (the stem or the shortcut
    conv and the last conv of every block of the stage, with their BatchNorms and the consumers' input
    channels). Groups that reach the model's output (the classifier) and depthwise convs are left out.
    The head is the member met first in ``named_modules`` order.
    """
    if scope not in SCOPES:
        raise WorkbenchError(f"unknown pruning scope '{scope}'; valid: {', '.join(SCOPES)}")
    root = unwrap(model)
    if scope == "internal":
        return {p: [p] for p in independent_convs(root, example_input)}
    dg = dependency_graph(root, example_input)
    names = {m: n for n, m in root.named_modules()}
    groups: Groups = {}
    taken: set[nn.Module] = set()
    for name, m in root.named_modules():
        if not isinstance(m, nn.Conv2d) or (m.groups > 1 and m.groups == m.out_channels) or m not in dg.module2node:
            continue
        if m in taken:
            continue
        members = coupled_layers(dg, m)
        taken.update(members)
        if _reaches_output(channel_group(dg, m, range(m.out_channels))):
            continue
        groups[name] = [names[x] for x in members]
    return groups


def group_of(groups: Mapping[str, Sequence[str]] | None, head: str) -> list[str]:
    """The members of ``head``'s group (``[head]`` when ``groups`` is None or does not list it)."""
    return list(groups.get(head, [head])) if groups else [head]


def check_groups(model: nn.Module, example_input: torch.Tensor, groups: Mapping[str, Sequence[str]]) -> None:
    """Refuse (one line naming the layer) a group whose channel removal the dependency graph gets wrong.

    On a copy, one channel of each group is removed in turn and the model run forward; a layer the graph
    does not know how to shrink (a per-channel parameter it does not see, a channel reshuffle) breaks
    the forward there.
    """
    import copy

    probe = copy.deepcopy(unwrap(model))
    dg = dependency_graph(probe, example_input)
    probe.eval()
    for head, members in groups.items():
        module = get_module(probe, head)
        if _out_channels(dg, module) < 2:
            raise WorkbenchError(f"layer '{head}' has a single output channel; it cannot be pruned (scope=internal)")
        try:
            channel_group(dg, module, [0]).prune()
            with torch.no_grad():
                probe(example_input)
        except Exception as exc:  # the forward of a wrongly pruned model fails in arbitrary ways
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            others = ", ".join(m for m in members if m != head)
            coupled = f" (coupled with {others})" if others else ""
            raise WorkbenchError(
                f"scope=all: Torch-Pruning's dependency graph cannot prune the output channels of '{head}'{coupled}: "
                f"the model fails after removing one ({reason}); use scope=internal"
            ) from None


def rounded_count(n: int, channels: int, round_to: int) -> int:
    """Channels to remove so that the ``channels − n`` kept are a multiple of ``round_to`` (rounded down, as
    Torch-Pruning's ``round_to`` does), at least ``round_to`` kept; ``n = 0`` or ``round_to ≤ 1`` unchanged."""
    if round_to <= 1 or n <= 0 or channels <= round_to:
        return n
    keep = channels - n
    keep = max(round_to, keep - keep % round_to)
    return channels - keep


def round_plan(plan: Plan, scores: Mapping[str, torch.Tensor], round_to: int) -> Plan:
    """``plan`` with each layer's removal count rounded (:func:`rounded_count`): its lowest-scoring channels."""
    if round_to <= 1:
        return {p: list(v) for p, v in plan.items()}
    out = {}
    for path, idxs in plan.items():
        s = scores[path].flatten()
        n = rounded_count(len(idxs), s.numel(), round_to)
        out[path] = sorted(torch.argsort(s, stable=True)[:n].tolist()) if n != len(idxs) else list(idxs)
    return out
