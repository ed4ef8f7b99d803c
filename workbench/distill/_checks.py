"""Shape checks shared by the distillation losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.errors import WorkbenchError


class ShapeError(WorkbenchError, ValueError):
    """Tensors of the wrong shape were passed to a distillation loss."""


def same_shape(where: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Raise ``ShapeError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ShapeError(
            f"{where}: {a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; "
            "pass tensors of the same shape"
        )


def ndim_in(where: str, name: str, t: torch.Tensor, allowed: Sequence[int]) -> None:
    """Raise ``ShapeError`` unless ``t.dim()`` is one of ``allowed``."""
    if t.dim() not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ShapeError(f"{where}: {name} must be {want}, got shape {tuple(t.shape)}")


def positive(where: str, name: str, value: float) -> None:
    """Raise ``WorkbenchError`` unless ``value > 0``."""
    if not value > 0:
        raise WorkbenchError(f"{where}: {name} must be > 0, got {value}")
