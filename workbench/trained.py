"""Reading a trained model back: the model file of a run directory, the model with its spec, and the
summary and config of the run that made it.

The one place that knows a finished run's layout (``checkpoints/model.pt``, ``summary.json``,
``config.yaml``): ``workbench eval``, the compression commands' source model and the KD teachers read
through it. Errors are one line naming what to pass instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from workbench.errors import WorkbenchError

MODEL_FILE = Path("checkpoints") / "model.pt"


def model_file(path: str | Path, key: str = "model") -> Path:
    """The ``checkpoints/model.pt`` of a run directory, or ``path`` itself when it is a model file.

    ``key`` is the config key that named the path, for the error messages.
    """
    if not str(path):
        raise WorkbenchError(f"missing '{key}': pass {key}=RUN_DIR (a `workbench train` run directory)")
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{key} {path} does not exist; pass the run directory that `workbench train` printed")
    if path.is_dir():
        candidate = path / MODEL_FILE
        if not candidate.is_file():
            raise WorkbenchError(
                f"{path} is not a finished train run (no {MODEL_FILE}); pass a `workbench train` run directory"
            )
        return candidate
    return path


def train_run_model_file(run_dir: str | Path, key: str = "teacher") -> Path:
    """The ``checkpoints/model.pt`` of a finished ``workbench train`` run directory (stricter than
    :func:`model_file`: a model file, another command's run or an unfinished run are refused)."""
    from workbench.runs import CONFIG_FILE, load_config_dict, load_summary

    path = Path(run_dir)
    hint = f"pass {key}=<a `workbench train` run directory>"
    if not str(run_dir):
        raise WorkbenchError(f"this method needs a {key}: {hint}")
    if not path.is_dir():
        raise WorkbenchError(f"{key} run directory {path} not found; {hint}")
    summary = load_summary(path)
    config = load_config_dict(path) if (path / CONFIG_FILE).is_file() else None
    if config is None or summary is None:
        raise WorkbenchError(f"{path} is not a finished run directory (no config.yaml/summary.json); {hint}")
    if summary.get("command") != "train":
        raise WorkbenchError(
            f"{path} is a '{summary.get('command', 'unknown')}' run, not a `workbench train` run; "
            f"train a {key} with `workbench train model=... dataset=...` and pass its run directory"
        )
    if not (path / MODEL_FILE).is_file():
        raise WorkbenchError(f"{path} holds no {MODEL_FILE}; the {key} run did not finish, train it again")
    return path / MODEL_FILE


@dataclass
class TrainedModel:
    """A saved model with its spec (``workbench.models.saved.save_model``), and the summary and, for a
    ``workbench train`` run, the config of the run that wrote it (empty when there is none)."""

    model: nn.Module
    spec: dict[str, Any]
    path: Path
    run_summary: dict[str, Any]
    train_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.spec["input_shape"])

    @property
    def trained_on(self) -> tuple[int, int] | None:
        """``(subset, seed)`` of the training images the run used, when it used a subset."""
        subset = self.train_config.get("subset")
        return (int(subset), int(self.train_config.get("seed", 0))) if subset else None


def load_trained(path: str | Path, key: str = "model") -> TrainedModel:
    """Load the model of a run directory (or a model file) with its run's summary and train config."""
    import json

    from omegaconf import OmegaConf

    from workbench.models.saved import load_model

    file = model_file(path, key)
    net, spec = load_model(file)
    run_dir = file.parent.parent
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config_path = run_dir / "config.yaml"
    train_config: dict[str, Any] = {}
    if config_path.is_file() and summary.get("command") == "train":
        loaded = OmegaConf.to_container(OmegaConf.load(config_path))
        train_config = loaded if isinstance(loaded, dict) else {}
    return TrainedModel(net, spec, file, summary, train_config)
