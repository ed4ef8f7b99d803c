"""Filter/channel importance criteria (METHODS.md §6). Lower score = pruned first.

- ``l1`` / ``l2``: the Lp norm of each output filter, ``s_c = ‖W[c]‖_p`` (SFP, arXiv 1808.06866, uses L2).
- ``pfgdf`` (arXiv 2006.12963): per layer, fit a Gaussian N(μ, σ²) to the filters' L1 norms
  (μ the mean, σ the population standard deviation); the score is the distance to the mean in
  units of σ, ``s_c = |‖W[c]‖₁ − μ| / σ``, so the filters "insignificant in distribution" inside
  the central band ``|‖W[c]‖₁ − μ| < kσ`` are exactly those with ``s_c < k`` (:func:`pfgdf_mask`).
- group importance (DepGraph, arXiv 2301.12900), :func:`group_scores`: for channels shared by several
  layers (a residual stream), the mean of a per-filter criterion over the group's layers,
  ``s_c = (1/|G|) Σ_{l∈G} s_l(c)``; a group of one layer is that layer's criterion.
- CPMC (arXiv 2011.03240), :func:`cpmc_importance`: three per-channel criteria, each normalised
  globally (over all channels of all layers) and combined (see its docstring).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from workbench.errors import WorkbenchError, unknown
from workbench.flops import count_macs, count_params
from workbench.models.features import get_module, unwrap
from workbench.prune.channels import channel_group, coupled_layers, dependency_graph, prune_channels

Criterion = Callable[[nn.Module], Tensor]


def filter_norms(weight: Tensor, p: int = 2) -> Tensor:
    """``‖W[c]‖_p`` for every output filter c of a conv/linear weight (C_out, ...), in float32 or wider."""
    return torch.linalg.vector_norm(weight.detach().flatten(1).float(), ord=p, dim=1)


def l1_norm(module: nn.Module) -> Tensor:
    """L1 norm of each output filter of ``module.weight``."""
    return filter_norms(module.weight, 1)


def l2_norm(module: nn.Module) -> Tensor:
    """L2 norm of each output filter of ``module.weight``."""
    return filter_norms(module.weight, 2)


def pfgdf_scores(module: nn.Module | Sequence[nn.Module]) -> Tensor:
    """``|‖W[c]‖₁ − μ| / σ`` over the layer's filters (σ: population std; all zero when σ = 0).

    For a group of layers sharing channels, ``‖W[c]‖₁`` is the group's mean L1 norm (:func:`group_scores`).
    """
    s = group_scores(module, l1_norm)
    mu, sigma = s.mean(), s.std(unbiased=False)
    if sigma == 0:
        return torch.zeros_like(s)
    return (s - mu).abs() / sigma


def pfgdf_mask(module: nn.Module | Sequence[nn.Module], k: float) -> Tensor:
    """Boolean mask of the filters inside the band ``|‖W[c]‖₁ − μ| < kσ`` (True = prune).

    If the band holds every filter, the one farthest from the mean is kept so the layer survives.
    """
    scores = pfgdf_scores(module)
    mask = scores < k
    if bool(mask.all()):
        mask[int(torch.argmax(scores))] = False
    return mask


def group_scores(modules: nn.Module | Sequence[nn.Module], criterion: Criterion) -> Tensor:
    """Group importance: the mean of ``criterion`` over the layers sharing the output channels,
    ``s_c = (1/|G|) Σ_{l∈G} s_l(c)`` (DepGraph's default mean reduction, arXiv 2301.12900)."""
    if isinstance(modules, nn.Module):
        return criterion(modules)
    if len(modules) == 1:
        return criterion(modules[0])
    return torch.stack([criterion(m).double() for m in modules]).mean(0)


CRITERIA: dict[str, Criterion] = {"l1": l1_norm, "l2": l2_norm, "pfgdf": pfgdf_scores}


def get_criterion(criterion: str | Criterion) -> Criterion:
    """A criterion by name (``l1``, ``l2``, ``pfgdf``) or the callable itself."""
    if callable(criterion):
        return criterion
    if criterion not in CRITERIA:
        raise unknown("pruning criterion", criterion, CRITERIA)
    return CRITERIA[criterion]


def _per_channel_cost(model: nn.Module, example_input: Tensor, path: str, base: tuple[int, int]) -> tuple[int, int]:
    """MACs and parameters saved by removing one output channel of ``path`` (the same for every channel)."""
    pruned = prune_channels(copy.deepcopy(model), example_input, {path: [0]})
    input_shape = tuple(example_input.shape[1:])
    return base[0] - count_macs(pruned, input_shape), base[1] - count_params(pruned)


GROUP_NORMS = ("total", "per_layer")
CPMCCriteria = tuple[Tensor, Tensor, Tensor]  # (w, m, p) per output channel, float64


def cpmc_criteria(
    model: nn.Module, example_input: Tensor, layers: Sequence[str], group_norm: str = "total"
) -> dict[str, CPMCCriteria]:
    """CPMC's raw per-channel criteria ``(w, m, p)`` of the output channels of ``layers`` (arXiv 2011.03240).

    For channel c of a layer, with its Torch-Pruning dependency group (the filter, the BatchNorm channel, the
    input slices of every layer consuming the channel and, for a coupled group such as a residual stream,
    the filters of every member conv ``G`` sharing the channel):

    - ``group_norm="total"`` (the paper's, which only met single layers): ``w_c = sqrt(Σ ‖slice‖²₂)`` over
      the conv/linear weight slices of the group, ``m_c``, ``p_c`` the MACs and parameters removed with the
      channel (``workbench.flops`` on the model with one channel removed);
    - ``group_norm="per_layer"``: the same per member conv, ``w_c = sqrt(Σ ‖slice‖²₂ / |G|)``,
      ``m_c = M_c / |G|``, ``p_c = P_c / |G|``, so that a coupled channel (a resnet56 stream channel is shared
      by |G| = 10 convs) is compared per layer with a channel of one conv; for |G| = 1 both are equal.
    """
    if group_norm not in GROUP_NORMS:
        raise unknown("CPMC group normalisation", group_norm, GROUP_NORMS)
    root = unwrap(model)
    base = count_macs(root, tuple(example_input.shape[1:])), count_params(root)
    dg = dependency_graph(root, example_input)
    magnitude = tp.importance.GroupMagnitudeImportance(
        p=2, group_reduction="sum", normalizer=None, target_types=[_ConvNd, nn.Linear]
    )
    raw = {}
    for path in layers:
        module = get_module(root, path)
        n = int(dg.get_out_channels(module))
        w2 = magnitude(channel_group(dg, module, range(n))).double()
        macs, params = _per_channel_cost(root, example_input, path, base)
        size = len(coupled_layers(dg, module)) if group_norm == "per_layer" else 1
        raw[path] = (
            (w2 / size).sqrt(),
            torch.full((n,), macs / size, dtype=torch.float64),
            torch.full((n,), params / size, dtype=torch.float64),
        )
    return raw


def cpmc_importance(
    model: nn.Module,
    example_input: Tensor,
    layers: Sequence[str],
    combine: str = "product",
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    group_norm: str = "total",
) -> dict[str, Tensor]:
    """CPMC channel importance of the output channels of ``layers`` (higher = keep).

    From the per-channel criteria ``(w, m, p)`` of :func:`cpmc_criteria` (weight of the filter together with
    the next layer's weights consuming the channel, MACs and parameters removed with it; ``group_norm``
    counts a coupled group's criteria in total or per member conv):

    - global normalisation over all channels of all layers: ``w̃ = w / max w``, and, since a costly
      channel is less worth keeping, ``m̃ = min m / m`` and ``p̃ = min p / p`` (all in (0, 1]);
    - ``combine="product"`` (default): ``I = w̃ · m̃ · p̃``; ``combine="sum"``:
      ``I = (a w̃ + b m̃ + c p̃) / (a + b + c)`` with ``(a, b, c) = weights``.

    The direction of the cost terms and the product/sum are choices (METHODS.md §6); rank
    channels globally by ``I`` (e.g. ``channels.plan_from_scores(..., scope="global")``).
    """
    if combine not in ("product", "sum"):
        raise WorkbenchError(f"unknown CPMC combination '{combine}'; valid: product, sum")
    raw = cpmc_criteria(model, example_input, layers, group_norm)
    w_max = max(float(r[0].max()) for r in raw.values())
    m_min = min(float(r[1].min()) for r in raw.values())
    p_min = min(float(r[2].min()) for r in raw.values())
    if w_max <= 0 or m_min <= 0 or p_min <= 0:
        raise WorkbenchError("CPMC needs non-zero weights, MACs and parameters for every channel of the given layers")
    out = {}
    a, b, c = weights
    for path, (w, m, p) in raw.items():
        terms = (w / w_max, m_min / m, p_min / p)
        if combine == "product":
            out[path] = terms[0] * terms[1] * terms[2]
        else:
            out[path] = (a * terms[0] + b * terms[1] + c * terms[2]) / (a + b + c)
    return out
