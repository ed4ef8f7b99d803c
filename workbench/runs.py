"""Run directories: ``runs/<group>/<name>/<YYYYmmdd-HHMMSS>-s<seed>/``.

Each holds ``config.yaml`` (fully resolved), TensorBoard event files, ``metrics.jsonl`` (one JSON object per
logged step), ``checkpoints/``, ``plots/`` and ``summary.json``. Only the main rank writes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import distributed
from workbench.config import to_dict, to_yaml
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_json, atomic_write_text
from workbench.tracking import RunLogger

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


@dataclass
class Run:
    """One run directory and its logger. ``resumed`` tells a command to continue from its checkpoint."""

    dir: Path
    group: str
    resumed: bool = False
    is_main: bool = True
    _logger: RunLogger | None = field(default=None, repr=False)

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.dir / "plots"

    @property
    def logger(self) -> RunLogger:
        if self._logger is None:
            self._logger = RunLogger(self.dir, enabled=self.is_main)
        return self._logger

    def resume_logging_at(self, step: int) -> None:
        """Continue the curves after ``step``: later entries of metrics.jsonl and TensorBoard are dropped."""
        if self._logger is not None:
            self._logger.close()
        self._logger = RunLogger(self.dir, enabled=self.is_main, purge_after=step)

    def save_config(self, cfg: Any) -> None:
        if self.is_main:
            atomic_write_text(self.dir / CONFIG_FILE, to_yaml(cfg))

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` atomically (main rank only)."""
        path = self.dir / SUMMARY_FILE
        if self.is_main:
            atomic_write_json(path, summary)
        return path

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()


def default_name(cfg: Any, keys: tuple[str, ...]) -> str:
    """A run name from the config's own values, e.g. ``fashion-mnist_resnet20``."""
    if getattr(cfg, "name", ""):
        return _slug(cfg.name)
    values = [str(getattr(cfg, k)) for k in keys if getattr(cfg, k, None) not in (None, "")]
    return _slug("_".join(values).replace("/", "-")) if values else "run"


def create_run(group: str, cfg: Any, name: str) -> Run:
    """Create a fresh run directory (rank 0 creates it, other ranks receive its path) and save the config."""
    path = None
    if distributed.is_main():
        root = Path(cfg.run_root) / _slug(group) / _slug(name)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{stamp}-s{cfg.seed}"
        suffix = 1
        while path.exists():
            path = root / f"{stamp}-s{cfg.seed}-{suffix}"
            suffix += 1
        for sub in ("", "checkpoints", "plots"):
            (path / sub).mkdir(parents=True, exist_ok=sub != "")
    path = Path(distributed.broadcast_object(str(path) if path else None))
    run = Run(dir=path, group=group, is_main=distributed.is_main())
    run.save_config(cfg)
    return run


def open_run(run_dir: str | Path, group: str | None = None) -> tuple[Run, dict]:
    """Open an existing run directory for ``--resume``; returns the run and its saved config as a dict."""
    path = Path(run_dir)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise WorkbenchError(f"{path} is not a run directory (no {CONFIG_FILE}); pass the folder a command printed")
    saved = load_config_dict(path)
    if group is not None:
        parts = path.resolve().parts
        if len(parts) >= 3 and parts[-3] != _slug(group):
            raise WorkbenchError(f"{path} is a '{parts[-3]}' run, not a '{group}' run; resume it with its own command")
    return Run(dir=path, group=group or "", resumed=True, is_main=distributed.is_main()), saved


def load_config_dict(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WorkbenchError(f"cannot read {path} ({exc}); is it a workbench run directory?") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path} is not a workbench config; is it a workbench run directory?")
    return data


BOOKKEEPING_KEYS = frozenset({"name", "run_root", "device", "progress", "num_workers"})


def finished_run(folder: str | Path, seed: int, cfg: Any | None = None) -> Path | None:
    """A finished run (it has ``summary.json``) of ``seed`` under ``folder``, for a resumed comparison to reuse.

    With ``cfg``, only a run whose saved config equals ``cfg`` up to the bookkeeping keys (name,
    run_root, device, progress, num_workers) counts, so changed settings are never answered by an old run.
    """
    folder = Path(folder)
    want = None if cfg is None else {k: v for k, v in to_dict(cfg).items() if k not in BOOKKEEPING_KEYS}
    for d in sorted(folder.glob("*")) if folder.is_dir() else []:
        summary = load_summary(d)
        if summary is None or summary.get("seed") != seed:
            continue
        if want is not None:
            saved = {k: v for k, v in load_config_dict(d).items() if k not in BOOKKEEPING_KEYS}
            if saved != want:
                continue
        return d
    return None


def load_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise WorkbenchError(f"{path} is not valid JSON; delete the run or re-run it") from None


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run directory (a folder with summary.json and config.yaml) under the given paths."""
    found = set()
    for p in map(Path, paths):
        if not p.exists():
            raise WorkbenchError(f"path {p} does not exist; pass run directories or folders holding them")
        candidates = [p / SUMMARY_FILE] if (p / SUMMARY_FILE).is_file() else p.rglob(SUMMARY_FILE)
        for s in candidates:
            if (s.parent / CONFIG_FILE).is_file():
                found.add(s.parent)
    return sorted(found)
