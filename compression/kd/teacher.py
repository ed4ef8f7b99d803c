"""Loading a teacher from a ``workbench train`` run directory, frozen and in eval mode."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from workbench.checkpoint import load_model
from workbench.errors import WorkbenchError
from workbench.runs import load_config_dict, load_summary

MODEL_FILE = Path("checkpoints") / "model.pt"


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter and put the module in eval mode; returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def check_teacher_dir(run_dir: str | Path) -> Path:
    """The teacher's ``checkpoints/model.pt``; a one-line error if ``run_dir`` is not a finished train run."""
    path = Path(run_dir)
    if not str(run_dir):
        raise WorkbenchError("this method needs a teacher: pass teacher=<a `workbench train` run directory>")
    if not path.is_dir():
        raise WorkbenchError(
            f"teacher run directory {path} not found; pass teacher=<a `workbench train` run directory>"
        )
    summary = load_summary(path)
    config = load_config_dict(path) if (path / "config.yaml").is_file() else None
    if config is None or summary is None:
        raise WorkbenchError(
            f"{path} is not a finished run directory (no config.yaml/summary.json); "
            "pass teacher=<a `workbench train` run directory>"
        )
    if summary.get("command") != "train":
        raise WorkbenchError(
            f"{path} is a '{summary.get('command', 'unknown')}' run, not a `workbench train` run; "
            "train a teacher with `workbench train model=... dataset=...` and pass its run directory"
        )
    if not (path / MODEL_FILE).is_file():
        raise WorkbenchError(f"{path} holds no {MODEL_FILE}; the teacher run did not finish, train it again")
    return path / MODEL_FILE


def load_teacher(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """``(frozen teacher in eval mode, its spec)`` from a ``workbench train`` run directory."""
    model, spec = load_model(check_teacher_dir(run_dir))
    return freeze(model), spec
