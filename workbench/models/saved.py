"""Model files: a model saved as its spec and state_dict (format ``workbench-model/1``), rebuilt without
unpickling code.

``spec`` holds what :func:`load_model` needs: ``name``, ``num_classes``, ``in_channels``, ``input_shape``,
``dataset`` and, for compressed models, ``removed_units`` (paths replaced by identity). Channel-pruned
weights are restored by resizing the freshly built modules to the saved shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workbench.checkpoint import MODEL_FORMAT, load_checkpoint, save_checkpoint
from workbench.errors import WorkbenchError
from workbench.models.features import unwrap as unwrap_model


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
    try:
        spec, state = dict(data["spec"]), data["state_dict"]
        kwargs = dict(spec.get("model_kwargs", {}))
        model = build_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **kwargs)
        if spec.get("removed_units"):
            remove_units(model, spec["removed_units"], spec["input_shape"])
        fit_modules_to_state_dict(model, state)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WorkbenchError(
            f"model file {path} is damaged or does not fit its model ({type(exc).__name__}: {first}); "
            "use another model file or re-run the command that wrote it"
        ) from None
    return model, spec
