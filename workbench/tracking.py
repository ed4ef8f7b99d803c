"""Run logging: TensorBoard scalars/images plus one JSON line per logged step in ``metrics.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.io import atomic_write_text, finite_or_none, storage_error

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Writes scalars to TensorBoard and ``metrics.jsonl``; disabled on non-main ranks.

    ``purge_after=step`` resumes a run: metrics.jsonl lines after ``step`` are dropped and TensorBoard
    purges events after it, so the curves continue without a fold.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, purge_after: int | None = None) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        self._purge = None if purge_after is None else purge_after + 1
        if enabled and purge_after is not None:
            _truncate_metrics(self.dir / METRICS_FILE, purge_after)

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.dir), purge_step=self._purge)
        return self._writer

    def scalars(self, values: dict[str, Any], step: int) -> None:
        """Log ``{tag: number}`` at ``step``."""
        if not self.enabled or not values:
            return
        clean = {k: float(v) for k, v in values.items() if v is not None}
        for tag, v in clean.items():
            self.writer.add_scalar(tag, v, step)
        entry = finite_or_none({"step": int(step), "time": round(time.time(), 3), **clean})
        line = json.dumps(entry) + "\n"
        try:
            with open(self.dir / METRICS_FILE, "a") as f:
                f.write(line)
        except OSError as exc:
            raise storage_error(self.dir / METRICS_FILE, exc) from None

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an HxW (grey) or HxWx3 array with values in [0, 1]."""
        if not self.enabled:
            return
        fmt = "HW" if image.ndim == 2 else "HWC"
        self.writer.add_image(tag, image, step, dataformats=fmt)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        if self.enabled:
            self.writer.add_figure(tag, fig, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if (entry := _parse(line)) and entry["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All entries of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [entry for line in path.read_text().splitlines() if (entry := _parse(line))]


def _parse(line: str) -> dict | None:
    """One metrics line; a line cut short by a crash is skipped."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) and "step" in entry else None
