"""``make demo`` on a machine without Fashion-MNIST: the demo's steps run, fall back to sklearn digits and say
so, and read cleanly in a log (no carriage-return progress bars). The dataset lookup is redirected with
``WORKBENCH_SYSTEM_DATASETS`` and ``WORKBENCH_DATA``, and apt is kept out with ``DEMO_APT=0``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *steps: str, timeout: int = 900) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "WORKBENCH": f"{sys.executable} -m workbench.cli",
        "WORKBENCH_SYSTEM_DATASETS": str(tmp_path / "no-system-datasets"),
        "WORKBENCH_DATA": str(tmp_path / "data"),
        "RUN_ROOT": str(tmp_path / "runs"),
        "DEMO_APT": "0",
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), *steps],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_demo_without_fashion_mnist_falls_back_to_digits_and_says_so(tmp_path):
    res = run_demo(tmp_path, "data", "core")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Fashion-MNIST is not on this machine" in res.stdout and "sklearn digits instead" in res.stdout
    assert "\r" not in res.stdout + res.stderr
    assert "error" not in res.stdout + res.stderr
    (summary,) = (tmp_path / "runs" / "train" / "demo").rglob("summary.json")
    assert json.loads(summary.read_text())["dataset"] == "digits"
    (config,) = (tmp_path / "runs" / "train" / "demo").rglob("config.yaml")
    assert "progress: false" in config.read_text()  # not a terminal: no progress bar


def test_demo_rejects_an_unknown_step(tmp_path):
    res = run_demo(tmp_path, "core", "nope")
    assert res.returncode == 2 and "unknown demo step 'nope'" in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_every_demo_step_without_fashion_mnist(tmp_path):
    res = run_demo(tmp_path, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "\r" not in res.stdout + res.stderr
    for group in ("train", "rl", "cil", "compress"):
        assert list((tmp_path / "runs" / group).rglob("summary.json")), group
