"""Shared fixtures: small in-memory data, a CLI runner, and a temporary run root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def workbench_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the ``workbench`` CLI in a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return workbench_cli


@pytest.fixture
def toy_data():
    """A linearly separable 2-class problem of 256 points in 20-D."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return torch.utils.data.TensorDataset(x, y)
