"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

Every file carries a ``format`` marker; a truncated file, a foreign file or an arbitrary pickle gives one
clear :class:`WorkbenchError` instead of being executed or half-loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.io import atomic_write

__all__ = ["MODEL_FORMAT", "TRAINER_FORMAT", "load_checkpoint", "save_checkpoint"]

TRAINER_FORMAT = "workbench-trainer/1"
MODEL_FORMAT = "workbench-model/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any], fmt: str = TRAINER_FORMAT) -> Path:
    """Atomically write ``payload`` (tensors, numbers, strings, lists, dicts) with a format marker."""
    data = {"format": fmt, **payload}
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(
    path: str | Path, fmt: str | tuple[str, ...] = TRAINER_FORMAT, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint safely; raise a one-line :class:`WorkbenchError` if it is missing, corrupt or foreign."""
    path = Path(path)
    formats = (fmt,) if isinstance(fmt, str) else fmt
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {path} not found; check the run directory or start without --resume")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"checkpoint {path} is truncated, corrupt or not a safe workbench checkpoint ({reason}); "
            "use another checkpoint or start a new run"
        ) from None
    found = data.get("format") if isinstance(data, dict) else None
    if found not in formats:
        raise WorkbenchError(
            f"checkpoint {path} is not a workbench checkpoint of kind {' or '.join(formats)} "
            f"(found {found!r}); point to a file written by workbench"
        )
    return data
