"""Torch-Pruning's importance criteria as filter-pruning baselines (METHODS.md §8), ``method=tp-<criterion>``.

DepGraph (Fang et al., arXiv 2301.12900) with the library's own criteria and its own pruner
(``torch_pruning.pruner.MetaPruner``, ``global_pruning=True``): every prunable group of the scope
(``scope=all``: every coupled group but the classifier's; ``scope=internal``: the block-internal convs
only, the other layers passed as ``ignored_layers``) is scored by the criterion's group importance,
normalised as the library does, and the channels below one global threshold go. The pruning ratio (the
share of the scope's channels removed) is the knob that ``fit_budget`` searches so that the MACs meet
``target_macs``; the pruned model is then fine-tuned for ``epochs + finetune_epochs`` like CPMC and PFGDF.

| method | Torch-Pruning importance (as shipped, default arguments) |
|---|---|
| ``tp-l1`` / ``tp-l2`` | ``GroupMagnitudeImportance(p=1 / 2)``: group L1 / L2 norm, mean-reduced and normalised |
| ``tp-taylor`` | ``GroupTaylorImportance()``: ``|w · ∂L/∂w|`` from CE gradients summed over ``tp_batches`` batches |
| ``tp-lamp`` | ``LAMPImportance()``: LAMP score (arXiv 2010.07611) |
| ``tp-fpgm`` | ``FPGMImportance()``: distance to the geometric median of the filters (arXiv 1811.00250) |
| ``tp-bn-scale`` | ``BNScaleImportance()``: ``|γ|`` of the BatchNorms of the group |
| ``tp-random`` | ``RandomImportance()``: uniform scores (drawn once per run from the run's seed) |

The plan is read from the pruner's groups (interactive step, nothing pruned there) in the unpruned
numbering and removed with ``workbench.prune.prune_channels`` (the same Torch-Pruning groups), so the
masked-versus-pruned checks and the MACs search are shared with the seed methods. One deviation, at
extreme ratios only: where every channel of a group falls below the global threshold the library skips
the group (the MACs would rise again with the ratio); here the group keeps one channel instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.conv import _ConvNd

from compression.pipeline import Splits
from compression.pruning import FILTER_METHODS
from compression.pruning.filters import OneShotMethod, Plan, example_input
from workbench.config import opt
from workbench.errors import WorkbenchError, unknown
from workbench.models.features import unwrap
from workbench.prune.channels import Groups

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "lamp": lambda: tp.importance.LAMPImportance(),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "bn-scale": lambda: tp.importance.BNScaleImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
RATIOS = [j / 400 for j in range(400)]  # knob: the global share of the scope's channels removed


def importance(criterion: str) -> tp.importance.Importance:
    """Torch-Pruning's importance object of ``criterion`` (a key of :data:`IMPORTANCES`)."""
    if criterion not in IMPORTANCES:
        raise unknown("Torch-Pruning criterion", criterion, IMPORTANCES)
    return IMPORTANCES[criterion]()


@dataclasses.dataclass
class TPKeys:
    """Keys of the Torch-Pruning baselines."""

    tp_batches: int = opt(4, "training batches whose summed CE gradients tp-taylor reads")


def _head_of(layers: Sequence[str], groups: Groups | None) -> dict[str, str]:
    return {q: h for h in layers for q in (groups or {}).get(h, [h])}


def library_plan(
    model: nn.Module,
    x: torch.Tensor,
    criterion: str,
    ratio: float,
    layers: Sequence[str],
    groups: Groups | None = None,
    round_to: int = 1,
    seed: int = 0,
) -> Plan:
    """The channels Torch-Pruning's global pruner removes at ``ratio`` with ``criterion``, as ``{head: idxs}``.

    Only the groups of ``layers`` (and their ``groups`` members) take part; every other conv/linear is
    an ignored layer. The model is traced in eval mode and not changed (the pruner's interactive step
    yields its groups, which are read, not pruned). ``seed`` fixes ``tp-random``'s draw.
    """
    root = unwrap(model)
    if criterion == "taylor" and not any(m.weight.grad is not None for m in root.modules() if isinstance(m, _ConvNd)):
        raise WorkbenchError("tp-taylor needs the loss gradients on the model's weights (TorchPruningMethod.prepare)")
    head_of = _head_of(layers, groups)
    names = {m: n for n, m in root.named_modules()}
    ignored = [m for n, m in root.named_modules() if isinstance(m, _ConvNd | nn.Linear) and n not in head_of]
    modes = [(m, m.training) for m in root.modules()]
    root.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pruner = tp.pruner.MetaPruner(
                root, x, importance(criterion), global_pruning=True, pruning_ratio=ratio, ignored_layers=ignored,
                round_to=round_to if round_to > 1 else None,
            )  # fmt: skip
            # the library skips a group whose channels all fall below the global threshold, which makes the
            # MACs jump back up at high ratios; such a group is read whole here and keeps one channel instead
            pruner.DG.check_pruning_group = lambda group: True
            plan: Plan = {h: [] for h in layers}
            for group in pruner.step(interactive=True):
                item = group[0]
                head = head_of.get(names[item.dep.target.module])
                if head is not None:
                    channels = int(pruner.DG.get_out_channels(item.dep.target.module))
                    plan[head] = sorted(int(i) for i in item.idxs)[: channels - 1]
    finally:
        for m, training in modes:
            m.training = training
    return plan


class TorchPruningMethod(OneShotMethod):
    """One Torch-Pruning criterion with the library's global pruner; the knob is the pruning ratio."""

    keys: ClassVar[type] = TPKeys
    knob_name: ClassVar[str] = "Torch-Pruning global ratio"

    def __init__(self, criterion: str) -> None:
        importance(criterion)  # refuse an unknown criterion at registration
        self.criterion = criterion
        self.needs_data = criterion == "taylor"

    def prepare(self, model: nn.Module, data: Splits, cfg: Any, device: torch.device) -> None:
        """tp-taylor: CE gradients summed over ``tp_batches`` training batches, in eval mode (BatchNorm
        statistics untouched); the library's Taylor importance reads them from ``weight.grad``."""
        if self.criterion != "taylor":
            return
        root = unwrap(model)
        generator = torch.Generator().manual_seed(int(cfg.seed))
        loader = torch.utils.data.DataLoader(data.plain, batch_size=cfg.batch_size, shuffle=True, generator=generator)
        modes = [(m, m.training) for m in root.modules()]
        root.eval()
        root.zero_grad(set_to_none=True)
        try:
            for i, (xb, yb) in enumerate(loader):
                if i == cfg.tp_batches:
                    break
                loss = nn.functional.cross_entropy(root(xb.to(device)), yb.to(device), reduction="sum")
                loss.backward()
        finally:
            for m, training in modes:
                m.training = training

    def validate(self, cfg: Any) -> None:
        if cfg.tp_batches < 1:
            raise WorkbenchError(f"bad value for 'tp_batches': {cfg.tp_batches}; must be >= 1")

    def knobs(
        self,
        model: nn.Module,
        layers: Sequence[str],
        shape: tuple[int, ...],
        options: Any,
        groups: Groups | None = None,
        round_to: int = 1,
    ) -> tuple[Callable[[float], Plan], list[float]]:
        x = example_input(model, shape)
        seed = int(torch.randint(0, 2**31 - 1, (1,)))  # from the run's seeded generator: tp-random's draw

        def plan_at(ratio: float) -> Plan:
            return library_plan(model, x, self.criterion, ratio, layers, groups, round_to, seed)

        return plan_at, RATIOS

    def compress(self, job: Any) -> Any:
        unwrap(job.model).zero_grad(set_to_none=True)  # tp-taylor's gradients are not carried into fine-tuning
        return super().compress(job)


for _name in IMPORTANCES:
    FILTER_METHODS.register(f"tp-{_name}", TorchPruningMethod(_name))
