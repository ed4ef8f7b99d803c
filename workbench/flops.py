"""MACs and parameter counts of a model, built on ``torch.utils.flop_counter.FlopCounterMode``.

FlopCounterMode counts the matrix products of a forward pass (convolutions, linear layers,
matmuls, attention) as 2 FLOPs per multiply-accumulate; BatchNorm, activations, pooling and
additions are not counted, which is the convention of the papers' "MACs"/"FLOPs" tables. So

    MACs = FLOPs / 2,  e.g. a k x k conv: C_out * (C_in / groups) * k^2 * H_out * W_out.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench.errors import WorkbenchError


def _probe_tensor(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise WorkbenchError(f"input_shape must be positive sizes of one sample, e.g. (3, 32, 32); got {input_shape}")
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return torch.zeros((1, *input_shape), device=device, dtype=dtype)


def _counted_forward(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCounterMode:
    """One forward of zeros in eval mode, without gradients, under a FlopCounterMode (modes restored after)."""
    x = _probe_tensor(model, tuple(input_shape))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for m, training in modes:
            m.training = training
    return counter


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on ONE sample of shape ``input_shape`` (e.g. (C, H, W)).

    The model runs once on zeros, on its own device and dtype, in eval mode and without
    gradients; every module's train/eval flag is restored afterwards.
    """
    return _counted_forward(model, input_shape).get_total_flops() // 2


def module_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """MACs of one sample inside every submodule, by module path (``"layer1.0"``), from one counted forward.

    Same convention as :func:`count_macs`; a module's count includes its children's. DDP and
    ``torch.compile`` wrappers are looked through, so the paths are those of the bare model.
    """
    from workbench.models.features import unwrap

    root = unwrap(model)
    counts = _counted_forward(root, tuple(input_shape)).get_flop_counts()
    prefix = type(root).__name__ + "."
    return {name[len(prefix) :]: sum(ops.values()) / 2 for name, ops in counts.items() if name.startswith(prefix)}


def count_params(model: nn.Module) -> int:
    """Number of parameters, trainable and frozen (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def model_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"macs": count_macs(model, input_shape), "params": count_params(model)}``."""
    return {"macs": count_macs(model, input_shape), "params": count_params(model)}
