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
from workbench.models.features import unwrap as unwrap_model

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


def save_model(path: str | Path, model: torch.nn.Module, spec: dict[str, Any]) -> Path:
    """Save a model as its spec and state_dict, so it can be rebuilt without unpickling code.

    ``spec`` holds what :func:`load_model` needs: ``name``, ``num_classes``, ``in_channels``, ``input_shape``,
    ``dataset`` and, for compressed models, ``removed_units`` (paths replaced by identity). Channel-pruned
    weights are restored by resizing the freshly built modules to the saved shapes.
    """
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    return save_checkpoint(path, {"spec": dict(spec), "state_dict": state}, fmt=MODEL_FORMAT)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, spec)``."""
    from workbench.models import build_model
    from workbench.prune.reshape import fit_modules_to_state_dict
    from workbench.prune.units import remove_units

    data = load_checkpoint(path, fmt=MODEL_FORMAT, map_location=map_location)
    spec = data["spec"]
    model = build_model(
        spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **spec.get("model_kwargs", {})
    )
    if spec.get("removed_units"):
        remove_units(model, spec["removed_units"], spec["input_shape"])
    fit_modules_to_state_dict(model, data["state_dict"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise WorkbenchError(f"model file {path} does not fit model '{spec['name']}' ({first})") from None
    return model, spec
