"""The sweep keys a ``compare`` command takes (``launcher=``, ``jobs=``, ``retries=``), one home for the three
compares: a config mixin and the sweep options it gives to :func:`workbench.sweep.run_sweep`."""

from __future__ import annotations

import dataclasses

from workbench.config import opt
from workbench.sweep.launchers import LAUNCHERS


@dataclasses.dataclass
class SweepKeys:
    """How a compare's sub-runs run: ``launcher=local|slurm``, ``jobs=`` at once, ``retries=`` of a failed one."""

    launcher: str = opt("local", "where the sub-runs run (workbench sweep's launcher)", LAUNCHERS.names())
    jobs: int = opt(0, "sub-runs at once (0: number of cores)", ge=0)
    retries: int = opt(1, "retries of a failed sub-run before it is reported failed", ge=0)


def sweep_options(cfg: SweepKeys) -> list[str]:
    """The ``workbench sweep`` keys of ``cfg`` (``jobs=0`` becomes the number of cores, so a resumed compare
    that sets it back to 0 is honoured)."""
    from workbench.sweep.driver import SweepOptions

    jobs = cfg.jobs or SweepOptions().cores()
    return [f"launcher={cfg.launcher}", f"jobs={jobs}", f"retries={cfg.retries}"]
