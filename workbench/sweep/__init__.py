"""``workbench sweep``: fan-out of any command over a grid, on this machine (``launcher=local``) or on SLURM
(``launcher=slurm``, through submitit); resumable, with retries, a status table and a final report with
reliable statistics (:mod:`workbench.stats`).

Python API: :func:`run_sweep` (what the compares call) — the same as the command line.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main", "run_sweep"]


def run_sweep(command: Sequence[str], args: Sequence[str] = (), options: Sequence[str] = ()) -> int:
    """Run ``workbench sweep COMMAND ARGS OPTIONS``: ``command`` like ``["train"]``, ``args`` the grid
    (``"seed=0:3"``), ``options`` sweep keys (``"jobs=2"``); returns the exit status."""
    from workbench.sweep.driver import execute, prepare

    return execute(prepare([*command, *args, *options]))


def main(argv: list[str]) -> int:
    from workbench.sweep.driver import main as driver_main

    return driver_main(argv)
