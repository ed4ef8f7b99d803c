"""``workbench sweep``: fan-out of any command over a grid, on this machine (``launcher=local``) or on SLURM
(``launcher=slurm``, through submitit); resumable, with retries, a status table and a final report with
reliable statistics (:mod:`workbench.stats`).

Python API: :func:`run_sweep`, the command line as a function (what the compares and ``bench sweep`` call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COMPARE_SWEEP_KEYS", "SweepResult", "main", "run_sweep"]

# the sweep keys of every compare (workbench.sweep.keys.SweepKeys), resume-safe: how sub-runs run, not what
COMPARE_SWEEP_KEYS = ("launcher", "jobs", "retries")


@dataclass
class SweepResult:
    """The sweep's directory, its exit status (0: every run done) and its status table (one dict per run:
    ``name``, ``values``, ``status``, ``attempts``, ``exit_code``, ``run_dir``, ``seconds``, ``job_id``)."""

    dir: Path
    exit_code: int
    runs: list[dict[str, Any]]


def run_sweep(
    command: Sequence[str], args: Sequence[str] = (), options: Sequence[str] = (), sweep_dir: str | Path | None = None
) -> SweepResult:
    """``workbench sweep COMMAND ARGS OPTIONS``: ``command`` like ``["rl", "train"]``, ``args`` the command's
    keys and grid (``"seed=0:3"``, ``"--preset"``, ``"NAME"``), ``options`` sweep keys (``"jobs=2"``).

    ``sweep_dir``: an existing folder to hold the sweep (a compare's own run directory) instead of a new
    ``<run_root>/sweep/...``; when it already holds this sweep, finished runs are skipped as on ``--resume``.
    """
    from workbench.sweep.driver import execute, prepare

    sweep = prepare([*command, *args, *options], sweep_dir=Path(sweep_dir) if sweep_dir is not None else None)
    code = execute(sweep)
    return SweepResult(sweep.dir, code, [dict(e) for e in sweep.status])


def main(argv: list[str]) -> int:
    from workbench.sweep.driver import main as driver_main

    return driver_main(argv)
