"""The filter-pruning family (METHODS.md §6) on the core's criteria, mask schedules and Torch-Pruning removal.

Every method prunes output filters of the convolutions whose channels are coupled to no other layer
(``workbench.prune.independent_convs``: in CIFAR ResNets the first conv of each block), so that the
removal is exactly channel removal in that conv, its BatchNorm and the next conv's input. A budget
``target_macs`` (fraction of the unpruned MACs) is turned into each method's own knob by bisection
on the real MACs of the physically pruned copy (``workbench.flops.count_macs``):

- mask schedules, trained through the Trainer's callbacks (``workbench.prune.masks``), rate ``P`` per layer:
  SFP (arXiv 1808.06866) zeroes the ``P`` share of lowest-L2 filters after every epoch;
  SRFP (arXiv 2010.09498) scales them by ``α_e`` decaying from 1 to 0; ASRFP (arXiv 2010.09498) also
  raises the rate as ``P_e = P (1 − exp(−k e / T))`` (``P`` is set so that ``P_T`` meets the budget);
  GHFP (arXiv 2011.03170) hard-prunes a rising share ``h_e`` of the selected filters, all hard at the end.
  At the end the selected filters are removed physically.
- CPMC (arXiv 2011.03240): one-shot on the trained model; channel importance from the filter and the
  next layer's weights consuming it, its MACs and its parameters, normalised globally and combined
  (``workbench.prune.cpmc_importance``); the globally lowest share ``r`` goes; then fine-tuning.
- PFGDF (arXiv 2006.12963): one-shot; per layer the filters whose L1 norm lies in the central band
  ``|‖W_c‖₁ − μ| < kσ`` of the layer's Gaussian fit go (``workbench.prune.pfgdf_mask``); ``k`` sets the
  rate; then fine-tuning.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.utils.flop_counter import FlopCounterMode

from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models.features import get_module, unwrap
from workbench.prune import (
    AsymptoticSofterFilterPruning,
    FilterMaskSchedule,
    GraduallyHardFilterPruning,
    SofterFilterPruning,
    SoftFilterPruning,
    cpmc_importance,
    independent_convs,
    pfgdf_mask,
    pfgdf_scores,
    plan_from_scores,
    prune_channels,
)
from workbench.prune.channels import channel_group, dependency_graph
from workbench.prune.criteria import get_criterion

MASK_METHODS = ("sfp", "srfp", "asrfp", "ghfp")
ONE_SHOT_METHODS = ("cpmc", "pfgdf")
METHODS = MASK_METHODS + ONE_SHOT_METHODS

Plan = dict[str, list[int]]


def example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """One zero sample on the model's device, for tracing."""
    first = next(unwrap(model).parameters())
    return torch.zeros((1, *input_shape), device=first.device, dtype=first.dtype)


def prunable_convs(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The independently prunable convolutions; refuses a model with none."""
    layers = independent_convs(model, example_input(model, input_shape))
    if not layers:
        raise WorkbenchError(
            f"model {type(unwrap(model)).__name__} has no convolution whose filters can be pruned alone; "
            "filter pruning needs a CNN such as resnet20/56"
        )
    return layers


def layer_count(rate: float, channels: int) -> int:
    """Filters a mask schedule selects at rate ``rate`` in a layer of ``channels``: ``min(C − 1, ⌊P·C⌋)``."""
    return min(channels - 1, math.floor(rate * channels + 1e-9))


def rate_plan(model: nn.Module, layers: Sequence[str], rate: float, criterion: str = "l2") -> Plan:
    """Per-layer plan: the ``layer_count(rate, C)`` filters with the lowest ``criterion`` in every layer."""
    crit = get_criterion(criterion)
    root = unwrap(model)
    plan = {}
    for path in layers:
        scores = crit(get_module(root, path))
        k = layer_count(rate, scores.numel())
        plan[path] = sorted(torch.argsort(scores, stable=True)[:k].tolist())
    return plan


def pruned_copy(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with the planned output channels removed physically."""
    pruned = copy.deepcopy(model)
    return prune_channels(pruned, example_input(pruned, input_shape), plan)


def macs_of_plan(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> int:
    """MACs of one sample through the model after physically removing ``plan``'s channels."""
    return count_macs(pruned_copy(model, plan, input_shape), tuple(input_shape))


def module_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """MACs of one sample inside every module path (``workbench.flops`` convention: FLOPs / 2), one pass."""
    root = unwrap(model)
    modes = [(m, m.training) for m in root.modules()]
    root.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            root(example_input(root, input_shape))
    finally:
        for m, training in modes:
            m.training = training
    prefix = type(root).__name__ + "."
    return {
        name[len(prefix) :]: sum(ops.values()) / 2
        for name, ops in counter.get_flop_counts().items()
        if name.startswith(prefix)
    }


def channel_costs(model: nn.Module, layers: Sequence[str], input_shape: Sequence[int]) -> dict[str, float]:
    """MACs saved by removing ONE output channel of each layer: its filter's share of the layer's MACs plus,
    for every conv/linear consuming the channel (its Torch-Pruning group), that consumer's per-input-channel share.

    For independently prunable layers the saving of a plan is linear: ``Σ_l |plan_l| · cost_l``.
    """
    root = unwrap(model)
    macs = module_macs(root, input_shape)
    dg = dependency_graph(root, example_input(root, input_shape))
    names = {m: n for n, m in root.named_modules()}
    costs = {}
    for path in layers:
        conv = get_module(root, path)
        cost = macs.get(path, 0.0) / conv.weight.shape[0]
        seen = {conv}
        for dep, _ in channel_group(dg, conv, [0]):
            target = dep.target.module
            if target in seen or not isinstance(target, _ConvNd | nn.Linear):
                continue
            seen.add(target)
            if dg.is_out_channel_pruning_fn(dep.handler):
                continue
            width = target.in_features if isinstance(target, nn.Linear) else target.in_channels
            cost += macs.get(names[target], 0.0) / width
        costs[path] = cost
    return costs


def search_knob(
    plan_at: Callable[[float], Plan], macs_at: Callable[[Plan], int], target_macs: int, knobs: Sequence[float]
) -> tuple[float, Plan, int]:
    """The first of the ascending ``knobs`` whose plan meets ``target_macs`` (MACs fall as the knob rises),
    by bisection over the list: O(log n) prunings. Returns ``(knob, plan, macs)``; raises when the last
    knob misses the target."""
    top_plan = plan_at(knobs[-1])
    top_macs = macs_at(top_plan)
    if top_macs > target_macs:
        raise _Unreachable(top_macs)
    lo, hi = -1, len(knobs) - 1  # knobs[hi] meets the target; knobs[lo] (if any) does not
    best = (knobs[hi], top_plan, top_macs)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        plan = plan_at(knobs[mid])
        macs = macs_at(plan)
        if macs <= target_macs:
            hi, best = mid, (knobs[mid], plan, macs)
        else:
            lo = mid
    return best


class _Unreachable(WorkbenchError):
    def __init__(self, macs: int) -> None:
        super().__init__("unreachable")
        self.macs = macs


def fit_budget(
    model: nn.Module,
    method: str,
    layers: Sequence[str],
    input_shape: Sequence[int],
    target: float,
    criterion: str = "l2",
    cpmc_combine: str = "product",
    cpmc_weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[float, Plan, int, int]:
    """The method's knob for ``target`` (fraction of MACs kept): ``(knob, plan, macs_after, macs_before)``.

    Knobs: the per-layer rate P (mask methods), the global share r of channels (CPMC), the band
    half-width k in σ (PFGDF). Raises a one-line error when the target cannot be reached.
    """
    if method not in METHODS:
        raise WorkbenchError(f"unknown filter-pruning method '{method}'; valid: {', '.join(METHODS)}")
    shape = tuple(input_shape)
    before = count_macs(model, shape)
    goal = int(target * before)
    root = unwrap(model)
    convs = {p: get_module(root, p) for p in layers}

    if method in MASK_METHODS:

        def plan_at(rate: float) -> Plan:
            return rate_plan(model, layers, rate, criterion)

        sizes = {int(m.weight.shape[0]) for m in convs.values()}
        knobs = sorted({n / c for c in sizes for n in range(c)})
    elif method == "cpmc":
        scores = cpmc_importance(model, example_input(model, shape), layers, cpmc_combine, tuple(cpmc_weights))
        total = sum(s.numel() for s in scores.values())

        def plan_at(ratio: float) -> Plan:
            return plan_from_scores(scores, ratio, scope="global")

        knobs = [(j + 0.5) / total for j in range(total)]  # int(ratio · total) = j exactly
    else:

        def plan_at(k: float) -> Plan:
            return {p: torch.nonzero(pfgdf_mask(m, k)).flatten().tolist() for p, m in convs.items()}

        values = sorted({float(v) for m in convs.values() for v in pfgdf_scores(m).tolist()})
        knobs = [0.0] + [v + 1e-6 for v in values]  # the band |s| < k takes one more score at each knob
    costs = channel_costs(model, layers, shape)

    def estimate(plan: Plan) -> int:
        return round(before - sum(len(idx) * costs[p] for p, idx in plan.items()))

    try:
        knob, plan, _ = search_knob(plan_at, estimate, goal, knobs)
        after = macs_of_plan(model, plan, shape)
        i = knobs.index(knob)
        while after > goal and i + 1 < len(knobs):  # only if the linear estimate were off: step on, measured
            i += 1
            knob, plan = knobs[i], plan_at(knobs[i])
            after = macs_of_plan(model, plan, shape)
        if after > goal:
            raise _Unreachable(after)
    except _Unreachable as exc:
        raise WorkbenchError(
            f"target_macs={target} cannot be reached by {method}: pruning its layers as far as it can leaves "
            f"{exc.macs / before:.3f} of the MACs; choose target_macs >= {math.ceil(exc.macs / before * 1000) / 1000}"
        ) from None
    return knob, plan, after, before


def make_schedule(
    method: str,
    rate: float,
    layers: Sequence[str],
    input_shape: Sequence[int],
    criterion: str = "l2",
    scale_bn: bool = True,
    alpha0: float = 1.0,
    decay: str = "linear",
    asrfp_k: float = 4.0,
    ghfp_schedule: str = "linear",
) -> FilterMaskSchedule:
    """The trainer callback of a mask method; ASRFP's ``P`` is raised so that its last rate ``P_T`` is ``rate``."""
    kw = dict(layers=list(layers), input_shape=tuple(input_shape), criterion=criterion, scale_bn=scale_bn)
    if method == "sfp":
        return SoftFilterPruning(rate, **kw)
    if method == "srfp":
        return SofterFilterPruning(rate, alpha0=alpha0, decay=decay, **kw)
    if method == "asrfp":
        final = 1.0 - math.exp(-asrfp_k)
        p = min(rate / final * (1 + 1e-7), 1.0 - 1e-9)
        return AsymptoticSofterFilterPruning(p, k=asrfp_k, alpha0=alpha0, decay=decay, **kw)
    if method == "ghfp":
        return GraduallyHardFilterPruning(rate, schedule=ghfp_schedule, **kw)
    raise WorkbenchError(f"'{method}' is not a mask-schedule method; valid: {', '.join(MASK_METHODS)}")


@torch.no_grad()
def zero_channels(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> nn.Module:
    """Mask ``plan``'s channels in place: their filters and the coupled BatchNorm weight and bias become 0.

    The masked network then computes what the physically pruned one computes (the channel is 0 after
    its BatchNorm, so its consumers see nothing of it).
    """
    root = unwrap(model)
    dg = dependency_graph(root, example_input(root, input_shape))
    for path, idxs in plan.items():
        if not idxs:
            continue
        conv = get_module(root, path)
        rows = torch.as_tensor(idxs, device=conv.weight.device)
        conv.weight[rows] = 0.0
        if conv.bias is not None:
            conv.bias[rows] = 0.0
        for dep, _ in channel_group(dg, conv, range(conv.weight.shape[0])):
            bn = dep.target.module
            if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.weight is not None:
                bn.weight[rows.to(bn.weight.device)] = 0.0
                bn.bias[rows.to(bn.bias.device)] = 0.0
    return model


def pruned_fraction(plan: Plan, model: nn.Module, layers: Sequence[str]) -> float:
    """Share of the filters of ``layers`` that ``plan`` removes."""
    root = unwrap(model)
    total = sum(get_module(root, p).weight.shape[0] for p in layers)
    return sum(len(plan.get(p, [])) for p in layers) / max(total, 1)
