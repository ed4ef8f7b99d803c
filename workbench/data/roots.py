"""Where datasets live: the data root and the one-line error for a dataset that is not there."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError

ENV_VAR = "WORKBENCH_DATA"
DEFAULT_ROOT = "~/.cache/workbench"


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``data_root`` if given, else ``$WORKBENCH_DATA`` if set and non-empty,
    else ``~/.cache/workbench``. ``~`` is expanded; the directory need not exist."""
    chosen = data_root if data_root not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser().absolute()


def not_found(name: str, root: Path, expected: str, how_to_get: str, downloadable: bool) -> WorkbenchError:
    """Build the one-line error for dataset ``name`` missing under ``root``, naming every way to provide it."""
    ways = "put it there, pass data_root=DIR or set $" + ENV_VAR
    ways += ", or pass download=true" if downloadable else " (it cannot be downloaded automatically)"
    return WorkbenchError(f"dataset '{name}' not found under {root} (expected {expected}; {how_to_get}); {ways}")


def unreadable(name: str, path: Path, err: Exception) -> WorkbenchError:
    """Build the one-line error for a dataset file that exists but cannot be parsed."""
    detail = " ".join(str(err).split()) or type(err).__name__
    return WorkbenchError(
        f"dataset '{name}': cannot read {path} ({detail}); the copy is damaged: delete it and provide it again"
    )
