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

Scope (``scope=``): ``internal`` (above, the default) or ``all``: every group of coupled output channels
that Torch-Pruning's dependency graph finds (DepGraph, arXiv 2301.12900; ``workbench.prune.prunable_groups``),
i.e. also the residual stream of each stage (stem or shortcut conv and the last conv of every block, their
BatchNorms, the consumers' inputs), so that every convolution is pruned as in SFP's paper. A group is scored
as a whole: the method's per-filter criterion averaged over the group's convs (``group_scores``; CPMC's
criteria cover its whole dependency group, taken per member conv with ``cpmc_group_norm=per_layer``, the
default, so that a stream channel is compared per layer with an internal one: ``workbench.prune.cpmc_criteria``),
and it is masked and removed as a whole.
``round_to=r`` keeps a multiple of r channels in every pruned group (as Torch-Pruning's ``round_to``).

Each method is a :class:`FilterMethod` registered in ``compression.pruning.FILTER_METHODS``: its config keys
(``keys``, a dataclass merged flat into ``workbench compress prune``'s config), its knob space
(:meth:`FilterMethod.knobs`), and how it compresses (:class:`MaskScheduleMethod`: train under the mask
schedule, remove, optionally fine-tune; :class:`OneShotMethod`: remove the planned channels of the trained
model, then fine-tune).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from compression.pipeline import PRUNED_FILE, Splits, accuracy, base_spec, fine_tune, val_accuracy
from compression.pruning import FILTER_METHODS
from workbench.config import opt
from workbench.errors import WorkbenchError
from workbench.flops import count_macs, module_macs
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
from workbench.prune.channels import (
    Groups,
    channel_group,
    check_groups,
    dependency_graph,
    group_of,
    round_plan,
    rounded_count,
)
from workbench.prune.channels import prunable_groups as graph_groups
from workbench.prune.criteria import get_criterion, group_scores

Plan = dict[str, list[int]]
FINETUNE_FILE = "finetune.pt"  # the trainer checkpoint of the fine-tuning after a mask schedule


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


def prunable_groups(model: nn.Module, input_shape: Sequence[int], scope: str = "internal") -> Groups:
    """The prunable channel groups ``{head: members}`` of ``scope`` (internal | all); refuses a model with none,
    and, for ``all``, a group the dependency graph cannot remove (one line naming the layer)."""
    if scope == "internal":
        return {p: [p] for p in prunable_convs(model, input_shape)}
    x = example_input(model, input_shape)
    groups = graph_groups(model, x, scope)
    if not groups:
        raise WorkbenchError(
            f"scope={scope}: model {type(unwrap(model)).__name__} has no convolution channels to prune; "
            "filter pruning needs a CNN such as resnet20/56"
        )
    check_groups(model, x, groups)
    return groups


def layer_count(rate: float, channels: int, round_to: int = 1) -> int:
    """Filters a mask schedule selects at rate ``rate`` in a layer of ``channels``: ``min(C − 1, ⌊P·C⌋)``,
    with ``round_to`` rounding the kept channels to a multiple (``rounded_count``)."""
    return min(channels - 1, rounded_count(math.floor(rate * channels + 1e-9), channels, round_to))


def rate_plan(
    model: nn.Module,
    layers: Sequence[str],
    rate: float,
    criterion: str = "l2",
    groups: Groups | None = None,
    round_to: int = 1,
) -> Plan:
    """Per-layer plan: the ``layer_count(rate, C)`` filters with the lowest ``criterion`` in every layer
    (a coupled group ranked by its group importance, ``group_scores``)."""
    crit = get_criterion(criterion)
    root = unwrap(model)
    plan = {}
    for path in layers:
        scores = group_scores([get_module(root, q) for q in group_of(groups, path)], crit)
        k = layer_count(rate, scores.numel(), round_to)
        plan[path] = sorted(torch.argsort(scores, stable=True)[:k].tolist())
    return plan


def pruned_copy(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with the planned output channels removed physically."""
    pruned = copy.deepcopy(model)
    return prune_channels(pruned, example_input(pruned, input_shape), plan)


def macs_of_plan(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> int:
    """MACs of one sample through the model after physically removing ``plan``'s channels."""
    return count_macs(pruned_copy(model, plan, input_shape), tuple(input_shape))


def channel_costs(model: nn.Module, layers: Sequence[str], input_shape: Sequence[int]) -> dict[str, float]:
    """MACs saved by removing ONE output channel of each layer: its filter's share of the layer's MACs plus,
    for every other conv/linear of its Torch-Pruning group, that layer's per-output-channel share (a coupled
    member) or per-input-channel share (a consumer).

    For independently prunable layers the saving of a plan is linear: ``Σ_l |plan_l| · cost_l``; with coupled
    groups a conv whose input and output channels are both pruned is counted twice for the pair, so the
    estimate is optimistic (``fit_budget`` then checks on the pruned model).
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
                cost += macs.get(names[target], 0.0) / target.weight.shape[0]
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
    groups: Groups | None = None,
    round_to: int = 1,
    method_options: dict[str, Any] | None = None,
) -> tuple[float, Plan, int, int]:
    """The method's knob for ``target`` (fraction of MACs kept): ``(knob, plan, macs_after, macs_before)``.

    Knobs (:meth:`FilterMethod.knobs`): the per-layer rate P (mask methods), the global share r of channels
    (CPMC), the band half-width k in σ (PFGDF). ``groups``: coupled layers per head (scope=all), ``round_to``:
    kept channels a multiple of it; ``method_options``: values of the method's other keys (``method_values``).
    Raises a one-line error when the target cannot be reached.
    """
    entry = FILTER_METHODS[method]
    given = {"criterion": criterion, "cpmc_combine": cpmc_combine, "cpmc_weights": list(cpmc_weights)}
    options = entry.options(**{**given, **(method_options or {})})
    shape = tuple(input_shape)
    before = count_macs(model, shape)
    goal = int(target * before)
    plan_at, knobs = entry.knobs(model, layers, shape, options, groups=groups, round_to=round_to)
    costs = channel_costs(model, layers, shape)

    def estimate(plan: Plan) -> int:
        return round(before - sum(len(idx) * costs[p] for p, idx in plan.items()))

    def measured(plan: Plan) -> int:
        return macs_of_plan(model, plan, shape)

    scope = "" if not groups or all(len(m) == 1 for m in groups.values()) else " (scope=all)"
    try:
        knob, plan, _ = search_knob(plan_at, estimate, goal, knobs)
        after = measured(plan)
        i = knobs.index(knob)
        if after > goal:  # the linear estimate was optimistic (coupled groups): bisect on, measured
            if i + 1 == len(knobs):
                raise _Unreachable(after)
            knob, plan, after = search_knob(plan_at, measured, goal, knobs[i + 1 :])
    except _Unreachable as exc:
        raise WorkbenchError(
            f"target_macs={target} cannot be reached by {method}{scope}: pruning its groups as far as it can leaves "
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
    groups: Groups | None = None,
    round_to: int = 1,
) -> FilterMaskSchedule:
    """The trainer callback of a mask method; ASRFP's ``P`` is raised so that its last rate ``P_T`` is ``rate``."""
    entry = FILTER_METHODS[method]
    if not isinstance(entry, MaskScheduleMethod):
        raise WorkbenchError(f"'{method}' is not a mask-schedule method; valid: {', '.join(mask_methods())}")
    options = entry.options(criterion=criterion, scale_bn=scale_bn, alpha0=alpha0, decay=decay, asrfp_k=asrfp_k,
                            ghfp_schedule=ghfp_schedule)  # fmt: skip
    return entry.schedule(rate, layers, input_shape, options, groups=groups, round_to=round_to)


@torch.no_grad()
def zero_channels(model: nn.Module, plan: Plan, input_shape: Sequence[int]) -> nn.Module:
    """Mask ``plan``'s channels in place: the filters of every conv sharing them (the layer alone, or its
    coupled group) and the coupled BatchNorm weight and bias become 0.

    The masked network then computes what the physically pruned one computes (the channel is 0 after
    its BatchNorm, and through residual additions of zeros, so its consumers see nothing of it).
    """
    root = unwrap(model)
    dg = dependency_graph(root, example_input(root, input_shape))
    for path, idxs in plan.items():
        if not idxs:
            continue
        conv = get_module(root, path)
        for dep, mapped in channel_group(dg, conv, idxs):
            target = dep.target.module
            rows = torch.as_tensor([int(i) for i in mapped], dtype=torch.long)
            is_filter = target is conv or dg.is_out_channel_pruning_fn(dep.handler)
            if isinstance(target, _ConvNd | nn.Linear) and is_filter:
                target.weight[rows.to(target.weight.device)] = 0.0
                if target.bias is not None:
                    target.bias[rows.to(target.bias.device)] = 0.0
            elif isinstance(target, nn.modules.batchnorm._BatchNorm) and target.weight is not None:
                target.weight[rows.to(target.weight.device)] = 0.0
                target.bias[rows.to(target.bias.device)] = 0.0
    return model


def method_values(cfg: Any) -> dict[str, Any]:
    """The values in ``cfg`` of the keys of ``cfg.method`` (for :func:`fit_budget`'s method options)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(FILTER_METHODS[cfg.method].keys)}


def pruned_fraction(plan: Plan, model: nn.Module, layers: Sequence[str]) -> float:
    """Share of the filters of ``layers`` that ``plan`` removes."""
    root = unwrap(model)
    total = sum(get_module(root, p).weight.shape[0] for p in layers)
    return sum(len(plan.get(p, [])) for p in layers) / max(total, 1)


# --- the methods ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class NoKeys:
    """A method without keys of its own."""


@dataclasses.dataclass
class MaskKeys:
    """Keys of every mask-schedule method."""

    criterion: str = opt("l2", "filter norm ranking the sfp family's filters", ("l1", "l2"))
    scale_bn: bool = opt(
        True,
        "mask the coupled BatchNorm weight and bias with the filter, so that the masked "
        "network computes what the pruned one does (the papers scale only the filter)",
    )


@dataclasses.dataclass
class SofterKeys(MaskKeys):
    """SRFP / ASRFP keys."""

    alpha0: float = opt(1.0, "initial decay factor α₀ (srfp, asrfp)")
    decay: str = opt("linear", "decay of α (srfp, asrfp)", ("linear", "power", "constant"))


@dataclasses.dataclass
class ASRFPKeys(SofterKeys):
    asrfp_k: float = opt(4.0, "rate constant k of ASRFP's P_e = P (1 - exp(-k e / T))")


@dataclasses.dataclass
class GHFPKeys(MaskKeys):
    ghfp_schedule: str = opt("linear", "GHFP's hard share h_e", ("linear", "cubic"))


@dataclasses.dataclass
class CPMCKeys:
    cpmc_combine: str = opt("product", "CPMC: product of the normalised criteria, or weighted sum", ("product", "sum"))
    cpmc_weights: list[float] = opt([1.0, 1.0, 1.0], "CPMC weights of weight, MACs and params (combine=sum)")
    cpmc_group_norm: str = opt(
        "per_layer",
        "CPMC at scope=all: a coupled group's weight, MACs and params criteria per member conv (per_layer) or "
        "summed over the group (total; the paper's, which met single layers only); equal at scope=internal",
        ("per_layer", "total"),
    )


@dataclass
class FilterJob:
    """What a method compresses: the trained ``model`` (on ``device``; a mask method trains it in place), its
    prunable ``layers``, the budget's ``knob`` and ``plan`` (``fit_budget``), the data and the run."""

    cfg: Any
    run: Any
    device: torch.device
    source: Any
    model: nn.Module
    shape: tuple[int, ...]
    layers: list[str]
    knob: float
    plan: Plan
    data: Splits
    groups: Groups | None = None
    round_to: int = 1


@dataclass
class FilterOutcome:
    """The physically pruned model after the method's training, with its accuracies and extra summary keys."""

    pruned: nn.Module
    plan: Plan
    acc_after_prune: float
    val_after_prune: float | None
    acc_final: float
    history: list[dict]
    extra: dict[str, Any]


class FilterMethod:
    """One filter-pruning method: ``keys`` (its config keys, defaults declared once), ``knobs`` (its budget
    knob space) and ``compress`` (prune and train). Registered as ``FILTER_METHODS.register(name, instance)``."""

    keys: ClassVar[type] = NoKeys
    needs_data: ClassVar[bool] = False  # prepare() reads training batches before the budget is fitted

    def prepare(self, model: nn.Module, data: Splits, cfg: Any, device: torch.device) -> None:
        """Work on the trained model before its knob is searched (e.g. gradients for a Taylor criterion)."""

    def options(self, **values: Any) -> Any:
        """The method's keys with ``values`` for those it has (the others ignored)."""
        names = {f.name for f in dataclasses.fields(self.keys)}
        return self.keys(**{k: v for k, v in values.items() if k in names})

    def knobs(
        self,
        model: nn.Module,
        layers: Sequence[str],
        shape: tuple[int, ...],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> tuple[Callable[[float], Plan], list[float]]:
        """``(plan_at, knobs)``: the plan at a knob value, and the ascending knob values (MACs fall as it rises).
        ``groups``: the coupled layers of each head in ``layers``; ``round_to``: kept channels a multiple of it."""
        raise NotImplementedError

    def validate(self, cfg: Any) -> None:
        """Refuse bad values of the method's keys (one-line ``WorkbenchError``)."""

    def compress(self, job: FilterJob) -> FilterOutcome:
        raise NotImplementedError


class MaskScheduleMethod(FilterMethod):
    """Trained under a mask schedule (a Trainer callback) for ``epochs``; the selected filters are then
    removed physically, and ``finetune_epochs`` fine-tune the pruned model. The knob is the rate P."""

    keys: ClassVar[type] = MaskKeys

    def knobs(
        self,
        model: nn.Module,
        layers: Sequence[str],
        shape: tuple[int, ...],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> tuple[Callable[[float], Plan], list[float]]:
        root = unwrap(model)
        sizes = {int(get_module(root, p).weight.shape[0]) for p in layers}
        return (lambda rate: rate_plan(model, layers, rate, options.criterion, groups, round_to)), sorted(
            {n / c for c in sizes for n in range(c)}
        )

    def schedule(
        self,
        rate: float,
        layers: Sequence[str],
        shape: Sequence[int],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> FilterMaskSchedule:
        raise NotImplementedError

    @staticmethod
    def _mask_keys(
        layers: Sequence[str], shape: Sequence[int], options: Any, groups: Groups | None, round_to: int
    ) -> dict[str, Any]:
        return dict(
            layers=list(layers), input_shape=tuple(shape), criterion=options.criterion, scale_bn=options.scale_bn,
            groups=groups, round_to=round_to,
        )  # fmt: skip

    def compress(self, job: FilterJob) -> FilterOutcome:
        from workbench.seeding import derive_seed

        cfg, run, device, shape, data = job.cfg, job.run, job.device, job.shape, job.data
        schedule = self.schedule(job.knob, job.layers, shape, cfg, groups=job.groups, round_to=job.round_to)
        trainer = fine_tune(job.model, cfg, cfg.epochs, data.train, data.test, device, run, cfg.seed,
                            callbacks=[schedule])  # fmt: skip
        masked = job.model
        acc_masked = accuracy(masked, data.test, device, cfg.eval_batch_size)
        plan = schedule.pruning_plan()
        pruned = pruned_copy(masked, plan, shape)
        x = torch.randn(16, *shape, device=device, generator=None)
        with torch.no_grad():
            diff = (masked.eval()(x) - pruned.eval()(x)).abs().max().item()
        acc_prune = accuracy(pruned, data.test, device, cfg.eval_batch_size)
        val_prune = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
        acc_final = acc_prune
        history = trainer.history
        if cfg.finetune_epochs:
            tuned = fine_tune(
                pruned, cfg, cfg.finetune_epochs, data.train, data.test, device, run, derive_seed(cfg.seed, "finetune"),
                checkpoint_name=FINETUNE_FILE, step_offset=trainer.global_step,
            )  # fmt: skip
            history = history + tuned.history
            acc_final = accuracy(pruned, data.test, device, cfg.eval_batch_size)
        extra = {"acc_masked": acc_masked, "max_abs_diff_masked_vs_pruned": diff, "rate": job.knob}
        return FilterOutcome(pruned, plan, acc_prune, val_prune, acc_final, history, extra)


class OneShotMethod(FilterMethod):
    """Pruned once on the trained model (the plan of the budget's knob), then fine-tuned for
    ``epochs + finetune_epochs``, so that every method trains equally long. ``knob_name`` labels the knob."""

    knob_name: ClassVar[str] = ""

    def compress(self, job: FilterJob) -> FilterOutcome:
        from workbench.io import atomic_write_json
        from workbench.models.saved import load_model, save_model

        cfg, run, device, shape, data = job.cfg, job.run, job.device, job.shape, job.data
        if run.resumed and (run.checkpoints / PRUNED_FILE).is_file():
            pruned, _ = load_model(run.checkpoints / PRUNED_FILE)
            saved = json.loads((run.checkpoints / "plan.json").read_text())
            acc_prune, plan, val_prune = saved["acc_after_prune"], saved["plan"], saved.get("val_acc_after_prune")
        else:
            plan = job.plan
            pruned = pruned_copy(job.model, plan, shape)
            acc_prune = accuracy(pruned, data.test, device, cfg.eval_batch_size)
            val_prune = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
            if run.is_main:
                save_model(run.checkpoints / PRUNED_FILE, pruned, base_spec(job.source))
                atomic_write_json(
                    run.checkpoints / "plan.json",
                    {"plan": plan, "acc_after_prune": acc_prune, "val_acc_after_prune": val_prune},
                )
        run.logger.scalars(
            {
                f"{cfg.method}/pruned_fraction": pruned_fraction(plan, job.model, job.layers),
                "acc/after_prune": acc_prune,
            },
            0,
        )
        trainer = fine_tune(pruned, cfg, cfg.epochs + cfg.finetune_epochs, data.train, data.test, device, run, cfg.seed)
        acc_final = accuracy(pruned, data.test, device, cfg.eval_batch_size)
        extra = {"knob": job.knob, "knob_name": self.knob_name}
        return FilterOutcome(pruned, plan, acc_prune, val_prune, acc_final, trainer.history, extra)


class SFP(MaskScheduleMethod):
    """SFP (arXiv 1808.06866)."""

    def schedule(
        self,
        rate: float,
        layers: Sequence[str],
        shape: Sequence[int],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> FilterMaskSchedule:
        return SoftFilterPruning(rate, **self._mask_keys(layers, shape, options, groups, round_to))


class SRFP(MaskScheduleMethod):
    """SRFP (arXiv 2010.09498)."""

    keys: ClassVar[type] = SofterKeys

    def schedule(
        self,
        rate: float,
        layers: Sequence[str],
        shape: Sequence[int],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> FilterMaskSchedule:
        kw = self._mask_keys(layers, shape, options, groups, round_to)
        return SofterFilterPruning(rate, alpha0=options.alpha0, decay=options.decay, **kw)


class ASRFP(MaskScheduleMethod):
    """ASRFP (arXiv 2010.09498); ``P`` is raised so that the last rate ``P_T = P (1 − e^{−k})`` is the budget's."""

    keys: ClassVar[type] = ASRFPKeys

    def schedule(
        self,
        rate: float,
        layers: Sequence[str],
        shape: Sequence[int],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> FilterMaskSchedule:
        final = 1.0 - math.exp(-options.asrfp_k)
        p = min(rate / final * (1 + 1e-7), 1.0 - 1e-9)
        kw = self._mask_keys(layers, shape, options, groups, round_to)
        return AsymptoticSofterFilterPruning(p, k=options.asrfp_k, alpha0=options.alpha0, decay=options.decay, **kw)


class GHFP(MaskScheduleMethod):
    """GHFP (arXiv 2011.03170)."""

    keys: ClassVar[type] = GHFPKeys

    def schedule(
        self,
        rate: float,
        layers: Sequence[str],
        shape: Sequence[int],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> FilterMaskSchedule:
        kw = self._mask_keys(layers, shape, options, groups, round_to)
        return GraduallyHardFilterPruning(rate, schedule=options.ghfp_schedule, **kw)


class CPMC(OneShotMethod):
    """CPMC (arXiv 2011.03240): the globally lowest share r of the combined channel importance goes."""

    keys: ClassVar[type] = CPMCKeys
    knob_name: ClassVar[str] = "global channel share"

    def knobs(
        self,
        model: nn.Module,
        layers: Sequence[str],
        shape: tuple[int, ...],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> tuple[Callable[[float], Plan], list[float]]:
        weights = tuple(options.cpmc_weights)
        # the criteria are taken over the head's whole dependency group (per member conv with group_norm=per_layer)
        scores = cpmc_importance(
            model, example_input(model, shape), layers, options.cpmc_combine, weights, options.cpmc_group_norm
        )
        total = sum(s.numel() for s in scores.values())
        knobs = [(j + 0.5) / total for j in range(total)]  # int(ratio · total) = j exactly
        return (lambda ratio: round_plan(plan_from_scores(scores, ratio, scope="global"), scores, round_to)), knobs

    def validate(self, cfg: Any) -> None:
        if len(cfg.cpmc_weights) != 3:
            raise WorkbenchError(f"cpmc_weights needs 3 values (weight, MACs, params), got {cfg.cpmc_weights}")


class PFGDF(OneShotMethod):
    """PFGDF (arXiv 2006.12963): per layer the filters in the band ``|‖W_c‖₁ − μ| < kσ`` go."""

    knob_name: ClassVar[str] = "band k (sigma)"

    def knobs(
        self,
        model: nn.Module,
        layers: Sequence[str],
        shape: tuple[int, ...],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> tuple[Callable[[float], Plan], list[float]]:
        root = unwrap(model)
        convs = {p: [get_module(root, q) for q in group_of(groups, p)] for p in layers}
        scores = {p: pfgdf_scores(m) for p, m in convs.items()}
        values = sorted({float(v) for s in scores.values() for v in s.tolist()})
        knobs = [0.0] + [v + 1e-6 for v in values]  # the band |s| < k takes one more score at each knob

        def plan_at(k: float) -> Plan:
            plan = {p: torch.nonzero(pfgdf_mask(m, k)).flatten().tolist() for p, m in convs.items()}
            return round_plan(plan, scores, round_to)

        return plan_at, knobs


FILTER_METHODS.register("sfp", SFP())
FILTER_METHODS.register("srfp", SRFP())
FILTER_METHODS.register("asrfp", ASRFP())
FILTER_METHODS.register("ghfp", GHFP())
FILTER_METHODS.register("cpmc", CPMC())
FILTER_METHODS.register("pfgdf", PFGDF())


def mask_methods() -> tuple[str, ...]:
    """The registered mask-schedule methods."""
    return tuple(n for n, m in FILTER_METHODS.items() if isinstance(m, MaskScheduleMethod))


def one_shot_methods() -> tuple[str, ...]:
    """The registered one-shot methods."""
    return tuple(n for n, m in FILTER_METHODS.items() if isinstance(m, OneShotMethod))


def __getattr__(name: str) -> tuple[str, ...]:
    # METHODS / MASK_METHODS / ONE_SHOT_METHODS read the registry when used, so later registrations count.
    lookup = {"METHODS": FILTER_METHODS.names, "MASK_METHODS": mask_methods, "ONE_SHOT_METHODS": one_shot_methods}
    if name in lookup:
        return lookup[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
