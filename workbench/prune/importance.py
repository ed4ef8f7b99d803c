"""Gradient-norm importance proxies (SGLP, METHODS.md §4).

For B batches (x_b, y_b) and the mean cross-entropy L_b(θ) of batch b, the importance of a
(sub)network is the mean over batches of the total gradient norm

    G = (1/B) Σ_b ‖∇_θ L_b‖₂,      ‖∇_θ L_b‖₂ = sqrt(Σ_{p ∈ θ} ‖∂L_b/∂p‖²_F),

over all parameters that require gradients (the sum Σ_b is B·G and ranks candidates the same way).
The per-unit variant restricts the inner sum to the parameters of each named unit:
G_u = (1/B) Σ_b sqrt(Σ_{p ∈ θ_u} ‖∂L_b/∂p‖²_F).

The model runs in eval mode by default, so BatchNorm uses its running statistics and the proxy
has no side effect on the model (no running-stat updates, no ``.grad`` left behind: gradients are
taken with ``torch.autograd.grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models.features import get_module, unwrap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _batch_grad_norms(
    model: nn.Module,
    groups: dict[str, list[nn.Parameter]],
    loader: Iterable[Any],
    device: torch.device | str,
    num_batches: int,
    loss_fn: LossFn,
    train_mode: bool,
) -> dict[str, float]:
    if num_batches < 1:
        raise WorkbenchError(f"gradient-norm importance needs num_batches >= 1, got {num_batches}")
    params = list({id(p): p for ps in groups.values() for p in ps}.values())
    if not params:
        raise WorkbenchError("gradient-norm importance found no parameters that require gradients")
    index = {id(p): i for i, p in enumerate(params)}
    sums = dict.fromkeys(groups, 0.0)
    modes = [(m, m.training) for m in model.modules()]
    model.train(train_mode)
    seen = 0
    try:
        for batch in loader:
            if seen == num_batches:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = [0.0 if g is None else float(g.detach().double().pow(2).sum()) for g in grads]
            for name, ps in groups.items():
                sums[name] += sum(sq[index[id(p)]] for p in ps) ** 0.5
            seen += 1
    finally:
        for m, training in modes:
            m.training = training
    if seen < num_batches:
        raise WorkbenchError(f"the loader gave {seen} batches but gradient-norm importance needs {num_batches}")
    return {name: total / seen for name, total in sums.items()}


def gradient_norm(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str,
    num_batches: int,
    loss_fn: LossFn = F.cross_entropy,
    train_mode: bool = False,
) -> float:
    """Mean over the first ``num_batches`` batches of the total gradient norm ‖∇_θ CE‖₂ (module docstring)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return _batch_grad_norms(model, {"": params}, loader, device, num_batches, loss_fn, train_mode)[""]


def unit_gradient_norms(
    model: nn.Module,
    units: Sequence[str],
    loader: Iterable[Any],
    device: torch.device | str,
    num_batches: int,
    loss_fn: LossFn = F.cross_entropy,
    train_mode: bool = False,
) -> dict[str, float]:
    """``{unit: G_u}``: mean over batches of the gradient norm of each unit's own parameters."""
    root = unwrap(model)
    groups = {u: [p for p in get_module(root, u).parameters() if p.requires_grad] for u in units}
    empty = [u for u, ps in groups.items() if not ps]
    if empty:
        raise WorkbenchError(f"units without trainable parameters have no gradient norm: {', '.join(empty)}")
    return _batch_grad_norms(model, groups, loader, device, num_batches, loss_fn, train_mode)
