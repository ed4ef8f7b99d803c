"""SGLP: similarity-guided fast layer partition pruning (Information Fusion; code itsnotacie/information-fusion-SGLP).

Given a trained residual network with L prunable units (residual blocks whose input and output
shapes match; stems and shape-changing blocks are anchors that stay):

1. **Similarity**: the L × L linear CKA matrix between the flattened outputs of the units on a probe
   set drawn from the *training* data (``workbench.prune.cka_matrix``, float64; full-batch biased
   estimator as in the paper, minibatch unbiased HSIC as a choice).
2. **Segmentation**: Fisher optimal segmentation (exact DP) of the ordered units. Paper default: the
   1-D sequence of CKA column sums ``v_j = Σ_i CKA_ij`` with within-segment sum of squares as cost;
   choices on the matrix: cost ``−mean intra-segment CKA``, or ``cka_sum_squares``, the within-segment
   sum of squares of the units' normalised centred Gram matrices, ``Σ_{p,q∈s} (1 − CKA_pq) / |s|``
   (``workbench.prune.segmentation``). k fixed, or the largest k whose loss drop exceeds 5 %
   (``workbench.prune.choose_num_segments``).
3. **Budget**: keep K units in all; segment s of size n_s keeps ``m_s`` units, K split in proportion
   to n_s by largest remainders, at least one per segment while K allows, never more than n_s.
4. **Importance** (gradient-norm proxy, ``workbench.prune.gradient_norm``): for every candidate subset
   S of m_s units of segment s, a copy of the pretrained network with the segment's other units
   removed scores ``G(S) = (1/B) Σ_b ‖∇_θ CE_b‖₂`` over B fixed training batches. Direction (choice,
   ``direction``): ``min`` (default) keeps the subset with the *smallest* G: a trained network that
   lost little sits close to its minimum, so its loss gradient is small (on a trained resnet20 the 35
   ways to drop 3 of 7 units gave corr(G, accuracy after removal) = −0.74, and the smallest G was the
   most accurate); ``max`` is the zero-cost-proxy reading for untrained networks (larger gradient
   norm = more trainable). Exhaustive over the C(n_s, m_s) subsets when that is at most
   ``subset_cap``; otherwise greedy backward elimination (drop, one at a time, the unit whose removal
   leaves the best G).
   Cheap option ``importance="unit"``: keep the m_s units with the largest own-parameter gradient norm.
5. **Removal**: every other unit becomes ``nn.Identity`` (the skip connection carries the signal).

Two SGLP rules: ``sglp`` follows the command's keys (the ``sglp-fmnist`` preset sets the variant chosen on a
validation split: matrix cost ``cka_sum_squares``, per-unit importance); ``sglp-paper`` fixes the paper's
choices whatever the keys say: the 1-D column-sum cost ``sum_squares``, subset GradNorm, and the paper's
direction (GradNorm as a zero-cost proxy: the subset whose pruned network has the *largest* G is kept,
``max``). The other keys (k, budget, batches, BatchNorm mode) are shared.

Baselines remove the same number of units: ``last`` (the deepest), ``random`` (seeded), and
``weight-norm`` (the smallest L2 norm of the unit's conv/linear weights).

Each rule (the method and every baseline) is a :class:`SelectionRule` registered in
``compression.pruning.SGLP_RULES``; ``workbench compress sglp baseline=NAME`` looks it up there.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from compression.pruning import SGLP_RULES
from workbench.errors import WorkbenchError
from workbench.flops import module_macs
from workbench.models.features import frozen_bn_stats, get_module, unwrap
from workbench.prune import (
    choose_num_segments,
    cka_matrix,
    gradient_norm,
    optimal_segmentations,
    residual_units,
    unit_gradient_norms,
)
from workbench.prune.segmentation import (
    SEGMENT_COSTS,
    neg_mean_similarity_costs,
    similarity_scatter_costs,
    sum_squares_costs,
)

IMPORTANCE = ("subset", "unit")
DIRECTIONS = ("min", "max")
BN_MODES = ("eval", "train")


@dataclass
class Selection:
    """Which units stay. ``segments`` are index ranges over ``units``; SGLP fills the analysis fields."""

    units: list[str]
    kept: list[str]
    removed: list[str]
    rule: str
    segments: list[tuple[int, int]] = field(default_factory=list)
    keep_per_segment: list[int] = field(default_factory=list)
    cka: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0


def prunable_units(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The residual units whose shapes match (``workbench.prune.residual_units``); refuses a model with none."""
    units = residual_units(model, input_shape)
    if not units:
        raise WorkbenchError(
            f"model {type(unwrap(model)).__name__} has no prunable residual units (blocks whose input and output "
            "shapes match); SGLP needs a residual network such as resnet20/56"
        )
    return units


def unit_macs(model: nn.Module, units: Sequence[str], input_shape: Sequence[int]) -> dict[str, int]:
    """MACs of one sample's forward inside each unit (what removing it saves), from one counted forward.

    Same convention as ``workbench.flops.count_macs`` (FLOPs of the matrix products / 2).
    """
    macs = module_macs(model, tuple(input_shape))
    return {u: int(macs.get(u, 0)) for u in units}


def units_for_target(
    total_macs: int, macs: dict[str, int], target: float, removable: Sequence[str]
) -> tuple[int, float]:
    """Smallest number of units r whose removal can bring MACs to ``target · total`` using the mean unit cost.

    Returns ``(r, floor)`` with ``floor`` the MACs fraction left when every removable unit goes; raises
    when ``target`` is below it (the anchors alone cost more).
    """
    floor = (total_macs - sum(macs[u] for u in removable)) / total_macs
    if target < floor - 1e-12:
        raise WorkbenchError(
            f"target_macs={target} cannot be reached: removing all {len(removable)} prunable units leaves "
            f"{floor:.3f} of the MACs; choose target_macs >= {math.ceil(floor * 1000) / 1000}"
        )
    mean = sum(macs[u] for u in removable) / len(removable)
    r = math.ceil(max(0.0, (1.0 - target) * total_macs) / mean - 1e-9) if mean > 0 else len(removable)
    return min(len(removable), max(0, r)), floor


def allocate(sizes: Sequence[int], total_keep: int) -> list[int]:
    """Units kept per segment: ``total_keep`` split in proportion to ``sizes`` by largest remainders,
    at least one per segment when ``total_keep`` allows, at most the segment's size."""
    n = sum(sizes)
    if not 0 <= total_keep <= n:
        raise WorkbenchError(f"cannot keep {total_keep} of {n} units")
    k = len(sizes)
    base = [1 if total_keep >= k else 0 for _ in sizes]
    rest = total_keep - sum(base)
    room = [s - b for s, b in zip(sizes, base, strict=True)]
    total_room = sum(room)
    shares = [rest * r / total_room if total_room else 0.0 for r in room]
    take = [min(room[i], math.floor(shares[i])) for i in range(k)]
    left = rest - sum(take)
    order = sorted(range(k), key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
    while left > 0:
        progressed = False
        for i in order:
            if left and take[i] < room[i]:
                take[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return [b + t for b, t in zip(base, take, strict=True)]


def segment_units(
    cka: np.ndarray, segments: int, cost: str = "sum_squares", threshold: float = 0.05
) -> list[tuple[int, int]]:
    """Fisher optimal segmentation of the units from their CKA matrix (module docstring, step 2).

    ``segments`` = 0 picks k as the largest k whose loss drop exceeds ``threshold``.
    """
    n = cka.shape[0]
    if cost not in SEGMENT_COSTS:
        raise WorkbenchError(f"unknown segment cost '{cost}'; valid: {', '.join(SEGMENT_COSTS)}")
    data = cka.sum(axis=0) if cost == "sum_squares" else cka
    if segments <= 0:
        return choose_num_segments(data, cost=cost, threshold=threshold).segmentation.boundaries
    if segments > n:
        raise WorkbenchError(f"segments={segments} exceeds the {n} prunable units; choose at most {n}")
    make = {"sum_squares": sum_squares_costs, "neg_mean_cka": neg_mean_similarity_costs}
    costs = make.get(cost, similarity_scatter_costs)(data)
    return optimal_segmentations(costs, segments)[segments].boundaries


@contextlib.contextmanager
def units_removed(model: nn.Module, paths: Sequence[str]) -> Iterator[nn.Module]:
    """Temporarily replace the units at ``paths`` by ``nn.Identity`` (restored on exit)."""
    root = unwrap(model)
    saved = []
    try:
        for p in paths:
            parent_path, _, name = p.rpartition(".")
            parent = get_module(root, parent_path)
            saved.append((parent, name, getattr(parent, name)))
            setattr(parent, name, nn.Identity())
        yield model
    finally:
        for parent, name, module in reversed(saved):
            setattr(parent, name, module)


class SubsetScorer:
    """Score of the pretrained network with the given units removed (higher = keep that subset), cached.

    The score is ``−G`` for ``direction="min"`` and ``G`` for ``"max"``, with G the gradient norm on the
    fixed batches (module docstring, step 4). ``bn="eval"`` takes G with the BatchNorm running statistics
    of the unpruned network; ``"train"`` with the candidate's own batch statistics (running statistics
    left untouched).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        direction: str = "min",
        bn: str = "train",
    ) -> None:
        if direction not in DIRECTIONS:
            raise WorkbenchError(f"unknown importance direction '{direction}'; valid: {', '.join(DIRECTIONS)}")
        if bn not in BN_MODES:
            raise WorkbenchError(f"unknown importance BatchNorm mode '{bn}'; valid: {', '.join(BN_MODES)}")
        self.model, self.batches, self.device = model, batches, device
        self.sign = -1.0 if direction == "min" else 1.0
        self.train_mode = bn == "train"
        self.cache: dict[frozenset[str], float] = {}

    def __call__(self, removed: Sequence[str]) -> float:
        key = frozenset(removed)
        if key not in self.cache:
            with units_removed(self.model, sorted(key)), frozen_bn_stats(self.model):
                g = gradient_norm(self.model, self.batches, self.device, len(self.batches), train_mode=self.train_mode)
            self.cache[key] = self.sign * g
        return self.cache[key]


def best_subset(segment: Sequence[str], keep: int, scorer: SubsetScorer, cap: int) -> list[str]:
    """The ``keep`` units of ``segment`` to keep: exhaustive when C(n, keep) ≤ ``cap``, else greedy."""
    segment = list(segment)
    if keep >= len(segment):
        return segment
    if math.comb(len(segment), keep) <= cap:
        best, best_score = None, -math.inf
        for subset in itertools.combinations(segment, keep):
            score = scorer([u for u in segment if u not in subset])
            if score > best_score:
                best, best_score = list(subset), score
        return best or []
    kept = list(segment)
    while len(kept) > keep:
        removed_now = [u for u in segment if u not in kept]
        scores = {u: scorer(removed_now + [u]) for u in kept}
        drop = max(kept, key=lambda u: (scores[u], -kept.index(u)))
        kept.remove(drop)
    return kept


def fixed_batches(data, batch_size: int, num_batches: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num_batches`` batches of a seeded shuffle of ``data`` (reused for every candidate)."""
    if len(data) < batch_size * num_batches:
        batch_size = max(1, len(data) // num_batches)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == num_batches:
            break
    if len(out) < num_batches:
        raise WorkbenchError(f"the training data gives {len(out)} batches; importance needs {num_batches}")
    return out


def probe_loader(data, samples: int, batch_size: int, seed: int) -> DataLoader:
    """A fixed, seeded random probe set of ``samples`` training images for CKA."""
    gen = torch.Generator().manual_seed(seed)
    n = min(samples, len(data))
    if n < 4:
        raise WorkbenchError(f"CKA needs at least 4 probe images, the training data has {len(data)}")
    idx = torch.randperm(len(data), generator=gen)[:n].sort().values.tolist()
    subset = torch.utils.data.Subset(data, idx)
    return DataLoader(subset, batch_size=batch_size, shuffle=False)


def weight_norms(model: nn.Module, units: Sequence[str]) -> dict[str, float]:
    """L2 norm of each unit's convolution and linear weights."""
    root = unwrap(model)
    out = {}
    for u in units:
        sq = 0.0
        for m in get_module(root, u).modules():
            if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
                sq += float(m.weight.detach().double().pow(2).sum())
        out[u] = sq**0.5
    return out


def baseline_selection(model: nn.Module, units: list[str], remove: int, rule: str, seed: int) -> Selection:
    """Remove ``remove`` units by a baseline rule (a :class:`BaselineRule`: ``last``, ``random``, ``weight-norm``)."""
    entry = SGLP_RULES[rule]
    if not isinstance(entry, BaselineRule):
        valid = ", ".join(n for n, r in SGLP_RULES.items() if isinstance(r, BaselineRule))
        raise WorkbenchError(f"'{rule}' is not a baseline unit-selection rule; valid: {valid}")
    removed, scores = entry.choose(model, units, remove, seed)
    removed_set = set(removed)
    return Selection(
        units=units,
        kept=[u for u in units if u not in removed_set],
        removed=[u for u in units if u in removed_set],
        rule=rule,
        scores=scores,
    )


@dataclass
class SGLPAnalysis:
    """What SGLP computes once per model: the CKA matrix and the segmentation (reused for several budgets)."""

    units: list[str]
    cka: np.ndarray
    segments: list[tuple[int, int]]


def analyse(
    model: nn.Module,
    units: list[str],
    probe: DataLoader,
    device: torch.device,
    estimator: str = "biased",
    segments: int = 0,
    cost: str = "sum_squares",
    threshold: float = 0.05,
) -> SGLPAnalysis:
    """Steps 1–2: the CKA matrix of the units on the probe set and its optimal segmentation."""
    cka = cka_matrix(model, units, probe, device, estimator=estimator).numpy()
    bounds = segment_units(cka, segments, cost, threshold)
    return SGLPAnalysis(units, cka, [(int(a), int(b)) for a, b in bounds])


def sglp_selection(
    model: nn.Module,
    analysis: SGLPAnalysis,
    keep: int,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    importance: str = "subset",
    cap: int = 64,
    keep_per_segment: Sequence[int] = (),
    scorer: SubsetScorer | None = None,
    bn: str = "train",
    rule: str = "sglp",
) -> Selection:
    """Steps 3–4: units kept per segment by the gradient-norm proxy (``bn``: see ``SubsetScorer``)."""
    units, bounds = analysis.units, analysis.segments
    sizes = [b - a for a, b in bounds]
    if keep_per_segment:
        if len(keep_per_segment) != len(bounds) or any(not 0 <= m <= s for m, s in zip(keep_per_segment, sizes)):
            raise WorkbenchError(
                f"keep_per_segment={list(keep_per_segment)} must give 0..size for each of the {len(bounds)} "
                f"segments of sizes {sizes}"
            )
        per_seg = list(keep_per_segment)
    else:
        per_seg = allocate(sizes, keep)
    kept: list[str] = []
    scores: dict[str, float] = {}
    if importance == "unit":
        with frozen_bn_stats(model):
            scores = unit_gradient_norms(model, units, batches, device, len(batches), train_mode=bn == "train")
    elif importance != "subset":
        raise WorkbenchError(f"unknown importance '{importance}'; valid: {', '.join(IMPORTANCE)}")
    scorer = scorer or SubsetScorer(model, batches, device, bn=bn)
    for (a, b), m in zip(bounds, per_seg, strict=True):
        seg = units[a:b]
        if importance == "unit":
            kept += sorted(seg, key=lambda u: (-scores[u], seg.index(u)))[:m]
        else:
            kept += best_subset(seg, m, scorer, cap)
    kept_set = set(kept)
    return Selection(
        units=units,
        kept=[u for u in units if u in kept_set],
        removed=[u for u in units if u not in kept_set],
        rule=rule,
        segments=bounds,
        keep_per_segment=per_seg,
        cka=analysis.cka,
        scores=scores,
        evaluations=len(scorer.cache),
    )


def pruned_copy(model: nn.Module, removed: Sequence[str], input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with the ``removed`` units replaced by identity (``workbench.prune.remove_units``)."""
    from workbench.prune import remove_units

    return remove_units(copy.deepcopy(model), removed, input_shape)


# --- the rules --------------------------------------------------------------------------------------------


@dataclass
class SelectionJob:
    """What a rule selects from: the trained ``model`` (on ``device``), its prunable ``units``, the
    un-augmented training images ``plain`` (probes) and the command config ``cfg`` (its SGLP keys, seed)."""

    cfg: Any
    model: nn.Module
    units: list[str]
    plain: Any
    device: torch.device


class SelectionRule:
    """How units are chosen for removal. ``selector(job)`` does the rule's one-off work (SGLP's analysis)
    and returns ``select(r)``, the :class:`Selection` removing ``r`` units (called again with a larger ``r``
    while a MACs target is not met)."""

    def selector(self, job: SelectionJob) -> Callable[[int], Selection]:
        raise NotImplementedError


class SGLPRule(SelectionRule):
    """The method: CKA analysis and segmentation once, then gradient-norm subset selection per budget.

    ``fixed`` holds config keys the rule sets whatever the command says (``sglp-paper``); ``name`` labels
    its selections."""

    def __init__(self, name: str = "sglp", fixed: dict[str, Any] | None = None) -> None:
        self.name = name
        self.fixed = dict(fixed or {})

    def settings(self, cfg: Any) -> Any:
        """``cfg`` with the rule's fixed keys applied (a shallow copy; ``cfg`` itself is left alone)."""
        if not self.fixed:
            return cfg
        out = copy.copy(cfg)
        for key, value in self.fixed.items():
            setattr(out, key, value)
        return out

    def selector(self, job: SelectionJob) -> Callable[[int], Selection]:
        from workbench.seeding import derive_seed

        cfg, model, units, plain, device = self.settings(job.cfg), job.model, job.units, job.plain, job.device
        probe = probe_loader(plain, cfg.probe_samples, cfg.probe_batch_size, derive_seed(cfg.seed, "probe"))
        analysis = analyse(
            model, units, probe, device, cfg.cka_estimator, cfg.segments, cfg.segment_cost, cfg.segment_threshold
        )
        batches = fixed_batches(
            plain, cfg.importance_batch_size, cfg.importance_batches, derive_seed(cfg.seed, "importance")
        )
        scorer = SubsetScorer(model, batches, device, cfg.importance_direction, cfg.importance_bn)

        def select(r: int) -> Selection:
            return sglp_selection(
                model, analysis, len(units) - r, batches, device, cfg.importance, cfg.subset_cap,
                cfg.keep_per_segment, scorer, cfg.importance_bn, self.name,
            )  # fmt: skip

        return select


class BaselineRule(SelectionRule):
    """A baseline at the same budget: ``choose`` returns the removed units (and any scores)."""

    def choose(self, model: nn.Module, units: list[str], remove: int, seed: int) -> tuple[list[str], dict]:
        raise NotImplementedError

    def selector(self, job: SelectionJob) -> Callable[[int], Selection]:
        from workbench.seeding import derive_seed

        name = next(n for n, r in SGLP_RULES.items() if r is self)
        seed = derive_seed(job.cfg.seed, "random-units")
        return lambda r: baseline_selection(job.model, job.units, r, name, seed)


class LastUnits(BaselineRule):
    """The deepest units go."""

    def choose(self, model: nn.Module, units: list[str], remove: int, seed: int) -> tuple[list[str], dict]:
        return (units[len(units) - remove :] if remove else []), {}


class RandomUnits(BaselineRule):
    """A seeded random sample of the units goes."""

    def choose(self, model: nn.Module, units: list[str], remove: int, seed: int) -> tuple[list[str], dict]:
        return random.Random(seed).sample(units, remove), {}


class WeightNormUnits(BaselineRule):
    """The units with the smallest L2 norm of their conv/linear weights go."""

    def choose(self, model: nn.Module, units: list[str], remove: int, seed: int) -> tuple[list[str], dict]:
        scores = weight_norms(model, units)
        return sorted(units, key=lambda u: (scores[u], units.index(u)))[:remove], scores


# The paper's SGLP (Information Fusion; METHODS.md §4): 1-D column-sum cost, subset GradNorm, largest G kept.
PAPER_SETTINGS = {"segment_cost": "sum_squares", "importance": "subset", "importance_direction": "max"}

SGLP_RULES.register("sglp", SGLPRule())
SGLP_RULES.register("sglp-paper", SGLPRule("sglp-paper", PAPER_SETTINGS))
SGLP_RULES.register("last", LastUnits())
SGLP_RULES.register("random", RandomUnits())
SGLP_RULES.register("weight-norm", WeightNormUnits())
