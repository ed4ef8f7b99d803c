"""Loading a teacher from a ``workbench train`` run directory, frozen and in eval mode."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from workbench.models import frozen_copy
from workbench.models.saved import load_model
from workbench.trained import train_run_model_file


def load_teacher(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """``(frozen teacher in eval mode, its spec)`` from a ``workbench train`` run directory
    (``workbench.trained.train_run_model_file`` refuses anything else in one line)."""
    model, spec = load_model(train_run_model_file(run_dir, "teacher"))
    return frozen_copy(model), spec
