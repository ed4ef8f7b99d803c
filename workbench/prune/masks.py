"""Filter mask schedules as trainer callbacks: soft, softer, asymptotic softer and gradually hard pruning.

All schedules act on the output filters of a set of conv layers. After epoch ``t`` (0-based) the
callback computes ``e = t + 1`` (completed epochs) and ``T = trainer.max_epochs`` and, in every
layer with C filters:

1. ranks the filters by a criterion (``l2`` by default; ``l1``, ``pfgdf`` or a callable), lowest first,
   filters already hard-pruned first of all;
2. selects ``n = min(C - 1, max(floor(P_e · C), #hard))`` filters: the selection mask;
3. hard-prunes the ``floor(h_e · n)`` lowest of them (hard filters stay hard): zeroed now, gradients
   zeroed in ``on_after_backward`` and weights re-zeroed in ``on_step_end``, so they stay exactly 0;
4. multiplies the other selected (soft) filters by ``α_e``: they keep training.

The schedules differ in ``P_e`` (rate), ``α_e`` (decay) and ``h_e`` (hard share):

- SFP, soft filter pruning (arXiv 1808.06866): ``P_e = P``, ``α_e = 0``, ``h_e = 0``.
- SRFP, softer filter pruning (arXiv 2010.09498): ``P_e = P``, ``h_e = 0`` and a decay from 1 to 0:
  ``linear``: ``α_e = α₀ (1 − e/T)`` (default, α₀ = 1); ``power``: ``α_e = α₀^e``; ``constant``:
  ``α_e = α₀``. ``α ≡ 0`` is SFP. A filter selected in consecutive epochs is scaled by the product.
- ASRFP (arXiv 2010.09498): SRFP's decay with the rate rising asymptotically to P:
  ``P_e = P (1 − exp(−k e / T))``, k = 4 by default.
- GHFP, gradually hard filter pruning (arXiv 2011.03170): ``P_e = P``, ``α_e = 0`` and
  ``linear``: ``h_e = min(1, e/T)`` (default) or ``cubic``: ``h_e = 1 − (1 − min(1, e/T))³``; at the last
  epoch ``h = 1``: every selected filter is hard.

Coupled groups (``groups={head: members}``, ``channels.prunable_groups(..., scope="all")``): a "layer" is
then a group of convs sharing output channels (a residual stream); its filters are ranked by the group
importance (``criteria.group_scores``, the mean of the criterion over the members) and every member's
filter (and, with ``scale_bn``, every BatchNorm of the group) is scaled together. ``round_to=r`` rounds
``n`` so that the kept channels are a multiple of r (``channels.rounded_count``).

Which convs: by default those whose output channels are coupled to no other layer through a
residual addition (``channels.independent_convs``: in CIFAR ResNets the first conv of every
block, i.e. the block-internal channels), so that the masks can later be removed physically with
``channels.prune_channels(model, x, schedule.pruning_plan())``. As in the papers only the filters are
scaled; a BatchNorm after them renormalises the channel in training (a zeroed filter leaves β). With
``scale_bn=True`` the BatchNorm channels coupled to a filter (weight and bias) get the same factor
and hard treatment, so that α acts on the network's function and a zeroed channel computes
exactly what the physically pruned network will.

Each ``on_train_epoch_end`` adds to ``logs``: ``<name>/rate`` (P_e), ``<name>/decay`` (α_e),
``<name>/hard_share`` (h_e), ``<name>/pruned_fraction`` and ``<name>/hard_fraction`` (selected and
hard filters over all filters of the pruned layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench.callbacks import Callback
from workbench.errors import WorkbenchError
from workbench.models.features import get_module, unwrap
from workbench.prune.channels import (
    channel_group,
    dependency_graph,
    group_of,
    independent_convs,
    plan_from_masks,
    rounded_count,
)
from workbench.prune.criteria import Criterion, get_criterion, group_scores

if TYPE_CHECKING:
    from workbench.trainer import Trainer

DECAYS = ("linear", "power", "constant")
HARD_SCHEDULES = ("linear", "cubic")


class FilterMaskSchedule(Callback):
    """Base schedule (module docstring); subclasses override ``rate_at``, ``decay_at``, ``hard_share_at``.

    ``rate``: target fraction P of filters per layer, in [0, 1). ``layers``: conv paths, default
    ``independent_convs``. ``input_shape``: one sample's shape for tracing, e.g. (3, 32, 32).
    ``groups``: ``{head: members}`` for coupled layers (``layers`` are then the heads, default all of
    ``groups``); ``round_to``: kept channels per layer a multiple of it.
    """

    name = "sfp"

    def __init__(
        self,
        rate: float,
        layers: Sequence[str] | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        criterion: str | Criterion = "l2",
        scale_bn: bool = False,
        groups: dict[str, list[str]] | None = None,
        round_to: int = 1,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise WorkbenchError(f"filter pruning rate must be in [0, 1), got {rate}")
        if round_to < 1:
            raise WorkbenchError(f"round_to must be >= 1, got {round_to}")
        self.rate = rate
        self.groups = {h: list(m) for h, m in groups.items()} if groups else None
        self.round_to = round_to
        if layers is None and self.groups:
            layers = list(self.groups)
        self.layers = list(layers) if layers is not None else None
        self.input_shape = tuple(input_shape)
        self.criterion = get_criterion(criterion)
        self.scale_bn = scale_bn
        self.masks: dict[str, Tensor] = {}
        self.hard: dict[str, Tensor] = {}
        self._convs: dict[str, nn.Module] = {}
        self._members: dict[str, list[nn.Module]] = {}
        self._bns: dict[str, list[nn.Module]] = {}
        self._keep: dict[str, Tensor] = {}  # per layer with hard filters: 1 = live, 0 = hard, on the device

    # The three quantities a schedule follows; e = completed epochs, T = total epochs.
    def rate_at(self, e: int, total: int) -> float:
        return self.rate

    def decay_at(self, e: int, total: int) -> float:
        return 0.0

    def hard_share_at(self, e: int, total: int) -> float:
        return 0.0

    def setup(self, model: nn.Module) -> None:
        """Resolve the layers (and BatchNorms for ``scale_bn``) of ``model``; called by ``on_fit_start``."""
        root = unwrap(model)
        first = next(root.parameters())
        x = torch.zeros((1, *self.input_shape), device=first.device, dtype=first.dtype)
        if self.layers is None:
            self.layers = independent_convs(root, x)
        self._convs = {p: get_module(root, p) for p in self.layers}
        self._members = {p: [get_module(root, q) for q in group_of(self.groups, p)] for p in self.layers}
        for p, members in self._members.items():
            for m in members:
                if not isinstance(m, nn.Conv2d | nn.Linear):
                    raise WorkbenchError(
                        f"filter masks apply to Conv2d/Linear layers, but '{p}' is a {type(m).__name__}"
                    )
        if self.scale_bn:
            dg = dependency_graph(root, x)
            for p, m in self._convs.items():
                group = channel_group(dg, m, range(m.weight.shape[0]))
                self._bns[p] = [d.target.module for d, _ in group if isinstance(d.target.module, nn.BatchNorm2d)]
        for p, m in self._convs.items():
            c = m.weight.shape[0]
            self.masks.setdefault(p, torch.zeros(c, dtype=torch.bool))
            self.hard.setdefault(p, torch.zeros(c, dtype=torch.bool))
        self._refresh_keep()

    def _refresh_keep(self) -> None:
        self._keep = {}
        for p, conv in self._convs.items():
            if bool(self.hard[p].any()):
                self._keep[p] = (~self.hard[p]).to(device=conv.weight.device, dtype=conv.weight.dtype)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.setup(trainer.model)

    @torch.no_grad()
    def apply(self, epoch: int, total: int) -> dict[str, float]:
        """Update and apply the masks after epoch ``epoch`` (0-based) of ``total``; returns the logged values."""
        e = epoch + 1
        rate, alpha, share = self.rate_at(e, total), self.decay_at(e, total), self.hard_share_at(e, total)
        selected_total = hard_total = filters = 0
        for p, conv in self._convs.items():
            c = conv.weight.shape[0]
            hard = self.hard[p].to(conv.weight.device)
            scores = group_scores(self._members[p], self.criterion).to(conv.weight.device).double()
            scores = torch.where(hard, torch.full_like(scores, -math.inf), scores)
            order = torch.argsort(scores, stable=True)
            n = rounded_count(math.floor(rate * c + 1e-9), c, self.round_to)
            n = min(c - 1, max(n, int(hard.sum())))
            n_hard = max(int(hard.sum()), math.floor(share * n + 1e-9))
            chosen, new_hard = order[:n], order[:n_hard]
            mask = torch.zeros(c, dtype=torch.bool, device=hard.device)
            mask[chosen] = True
            hard = torch.zeros_like(mask)
            hard[new_hard] = True
            soft = mask & ~hard
            # A zeroed BatchNorm γ would stop a soft filter's gradient (soft pruning would be hard): soft rows
            # zeroed before the last epoch keep their BatchNorm; at the last epoch it goes too (masked = pruned).
            self._scale(p, soft, alpha, bn=alpha != 0.0 or e >= total)
            self._scale(p, hard, 0.0)
            self.masks[p], self.hard[p] = mask.cpu(), hard.cpu()
            selected_total += n
            hard_total += n_hard
            filters += c
        self._refresh_keep()
        return {
            f"{self.name}/rate": rate,
            f"{self.name}/decay": alpha,
            f"{self.name}/hard_share": share,
            f"{self.name}/pruned_fraction": selected_total / max(filters, 1),
            f"{self.name}/hard_fraction": hard_total / max(filters, 1),
        }

    def _tensors(self, path: str, bn: bool = True) -> list[Tensor]:
        tensors = []
        for conv in self._members[path]:
            tensors += [conv.weight, conv.bias]
        for norm in self._bns.get(path, []) if bn else []:
            tensors += [norm.weight, norm.bias]
        return [t for t in tensors if t is not None]

    def _scale(self, path: str, rows: Tensor, factor: float, bn: bool = True) -> None:
        if bool(rows.any()):
            for t in self._tensors(path, bn):
                if factor == 0.0:
                    t[rows.to(t.device)] = 0.0
                else:
                    t[rows.to(t.device)] *= factor

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        logs.update(self.apply(epoch, trainer.max_epochs))

    def _mask_hard(self, grads: bool) -> None:
        # Multiplying by a 0/1 vector keeps the step free of host-device synchronisation.
        for p, keep in self._keep.items():
            for t in self._tensors(p):
                target = t.grad if grads else t
                if target is not None:
                    target.mul_(keep.view(-1, *([1] * (t.dim() - 1))))

    def on_after_backward(self, trainer: Trainer) -> None:
        self._mask_hard(grads=True)

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self._mask_hard(grads=False)

    def pruning_plan(self) -> dict[str, list[int]]:
        """The selected filters per layer, ready for ``channels.prune_channels``."""
        return plan_from_masks(self.masks)

    def state_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers or []), "masks": dict(self.masks), "hard": dict(self.hard)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.layers = list(state["layers"]) or self.layers
        self.masks = {p: m.bool().cpu() for p, m in state["masks"].items()}
        self.hard = {p: m.bool().cpu() for p, m in state["hard"].items()}
        if self._convs:
            self._refresh_keep()


class SoftFilterPruning(FilterMaskSchedule):
    """SFP (arXiv 1808.06866): zero the ``rate`` share of lowest-norm filters after every epoch."""

    name = "sfp"


class SofterFilterPruning(FilterMaskSchedule):
    """SRFP (arXiv 2010.09498): scale the selected filters by a decaying ``α_e`` instead of zeroing them.

    ``decay``: ``linear`` ``α_e = α₀ (1 − e/T)``, ``power`` ``α_e = α₀^e``, ``constant`` ``α_e = α₀``.
    """

    name = "srfp"

    def __init__(self, rate: float, alpha0: float = 1.0, decay: str = "linear", **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        if decay not in DECAYS:
            raise WorkbenchError(f"unknown decay '{decay}'; valid: {', '.join(DECAYS)}")
        if not 0.0 <= alpha0 <= 1.0:
            raise WorkbenchError(f"alpha0 must be in [0, 1], got {alpha0}")
        self.alpha0, self.decay = alpha0, decay

    def decay_at(self, e: int, total: int) -> float:
        if self.decay == "linear":
            return self.alpha0 * max(0.0, 1.0 - e / total)
        if self.decay == "power":
            return self.alpha0**e
        return self.alpha0


class AsymptoticSofterFilterPruning(SofterFilterPruning):
    """ASRFP (arXiv 2010.09498): SRFP with the rate ``P_e = P (1 − exp(−k e / T))`` rising towards P."""

    name = "asrfp"

    def __init__(self, rate: float, k: float = 4.0, **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        if k <= 0:
            raise WorkbenchError(f"the ASRFP rate constant k must be > 0, got {k}")
        self.k = k

    def rate_at(self, e: int, total: int) -> float:
        return self.rate * (1.0 - math.exp(-self.k * e / total))


class GraduallyHardFilterPruning(FilterMaskSchedule):
    """GHFP (arXiv 2011.03170): a rising share ``h_e`` of the selected filters is hard-pruned (zeroed, frozen).

    ``schedule``: ``linear`` ``h_e = min(1, e/T)`` or ``cubic`` ``h_e = 1 − (1 − min(1, e/T))³``.
    """

    name = "ghfp"

    def __init__(self, rate: float, schedule: str = "linear", **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        if schedule not in HARD_SCHEDULES:
            raise WorkbenchError(f"unknown hard-share schedule '{schedule}'; valid: {', '.join(HARD_SCHEDULES)}")
        self.schedule = schedule

    def hard_share_at(self, e: int, total: int) -> float:
        x = min(1.0, e / total)
        return x if self.schedule == "linear" else 1.0 - (1.0 - x) ** 3
