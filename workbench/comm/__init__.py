"""Gradient compression for data-parallel training: DDP communication hooks, registered by name.

``comm_hook=none|fp16|bf16|powersgd|count-sketch`` (trainer key) picks one of :data:`COMM_HOOKS`; under
``torchrun`` the trainer registers it on its DDP model, logs the bytes each rank hands to collectives per
step and the compression ratio, and checkpoints the hook's per-rank state. ``count-sketch`` is gs-SGD
(arXiv 2108.06004) on :class:`CountSketch`; the others are torch's own hooks.
"""

from __future__ import annotations

from typing import Any

from workbench.comm.hooks import COMM_HOOKS, CommHook, CountSketchHook, PowerSGDHook, build_hook, sketch_budget
from workbench.comm.sketch import CountSketch
from workbench.errors import WorkbenchError

SKETCH_VALUES = ("exact", "estimate")
COMM_FORMAT = "workbench-comm-state/1"  # per-rank hook state beside a trainer checkpoint

__all__ = [
    "COMM_FORMAT",
    "COMM_HOOKS",
    "SKETCH_VALUES",
    "CommHook",
    "CountSketch",
    "CountSketchHook",
    "PowerSGDHook",
    "build_hook",
    "sketch_budget",
    "validate_comm",
]


def validate_comm(cfg: Any) -> None:
    """One-line errors for the communication keys of a trainer config."""
    for key in ("sketch_rows", "powersgd_rank"):
        if getattr(cfg, key) < 1:
            raise WorkbenchError(f"bad value for '{key}': {getattr(cfg, key)}; must be ≥ 1")
    for key in ("sketch_cols", "sketch_k", "sketch_start_iter"):
        if getattr(cfg, key) < 0:
            raise WorkbenchError(f"bad value for '{key}': {getattr(cfg, key)}; must be ≥ 0 (0 = derive it)")
    if cfg.sketch_ratio < 1:
        raise WorkbenchError(f"bad value for 'sketch_ratio': {cfg.sketch_ratio}; must be ≥ 1 (dense ÷ sent bytes)")
    if cfg.sketch_momentum is not None and not 0 <= cfg.sketch_momentum < 1:
        raise WorkbenchError(f"bad value for 'sketch_momentum': {cfg.sketch_momentum}; must be in [0, 1) or null")
    if cfg.powersgd_start_iter < 2:
        raise WorkbenchError(
            f"bad value for 'powersgd_start_iter': {cfg.powersgd_start_iter}; must be ≥ 2 "
            "(torch's PowerSGD with error feedback starts after DDP's bucket rebuild)"
        )
    if cfg.sketch_values == "estimate" and cfg.sketch_rows < 3:
        raise WorkbenchError(
            f"sketch_values=estimate needs sketch_rows ≥ 3 (got {cfg.sketch_rows}): one row gives every coordinate "
            "of a column the same estimate; raise sketch_rows or use sketch_values=exact"
        )
    if cfg.comm_hook == "count-sketch" and cfg.precision == "fp16":
        raise WorkbenchError(
            "comm_hook=count-sketch does not combine with precision=fp16 (the GradScaler's skipped steps would "
            "corrupt the error memory); use precision=bf16 or fp32"
        )
