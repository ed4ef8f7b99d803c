"""``workbench compress compare protocol=... methods=... seeds=...``: dispatches to the protocol's family.

Both families run their sub-runs through the core sweep (:func:`sweep_sub_runs`): each sub-run its own
process, ``jobs`` at once, on ``launcher=local|slurm``, finished ones skipped when the compare is resumed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.sweep.keys import SweepKeys

PRUNE_PROTOCOLS = ("sglp-fmnist", "prune-fmnist", "sglp-cifar10")
KD_PROTOCOLS = ("kd-fmnist", "cifar100-kd")


@dataclasses.dataclass
class CompareConfig(SweepKeys, CommonConfig):
    protocol: str = opt("kd-fmnist", "benchmark protocol (BENCHMARKS.md)", choices=PRUNE_PROTOCOLS + KD_PROTOCOLS)
    methods: list[str] = opt(
        [], "methods to compare (default: all of the protocol's); prune-fmnist rows are NAME@SCOPE, e.g. sfp@all"
    )
    seeds: list[int] = opt([0, 1, 2], "seeds")
    base_model: str = opt("", "a `workbench train` run directory to start from (default: train one per seed)")
    overrides: list[str] = opt([], "extra key=value settings passed to every sub-run, e.g. epochs=2,subset=2000")

    def validate(self) -> None:
        """Refuse an override the sub-runs' sweep grid would split into several runs (``workbench.sweep.grid``)."""
        from workbench.sweep.grid import refuse_split

        types = _sub_run_types(self.protocol)
        for item in self.overrides:
            key, _, value = item.partition("=")
            refuse_split(key, value, _override_type(key.strip(), types))


def _sub_run_types(protocol: str) -> dict[str, dict[str, str]]:
    """The key types of the sub-runs a protocol's overrides reach, by override prefix."""
    from workbench.commands.train import TrainCommandConfig
    from workbench.sweep.grid import schema_types

    if protocol in PRUNE_PROTOCOLS:
        from compression.pruning.config import PruneConfig, SGLPConfig

        schemas = {"prune": PruneConfig, "sglp": SGLPConfig}
    else:
        from compression.kd.config import KDConfig

        schemas = {"kd": KDConfig}
    return {name: schema_types(s) for name, s in {**schemas, "train": TrainCommandConfig}.items()}


def _override_type(key: str, types: dict[str, dict[str, str]]) -> str:
    """The type of an override's key: ``PREFIX.KEY`` in that sub-run, a plain key in the first sub-run having
    it (``str`` when none has it; the routing refuses unknown keys later)."""
    prefix, _, rest = key.partition(".")
    if rest and prefix in types:
        return types[prefix].get(rest, "str")
    return next((t[key] for t in types.values() if key in t), "str")


def last_wins(args: Sequence[str]) -> list[str]:
    """``key=value`` arguments with each key once, its last value (later settings override earlier ones)."""
    keyed: dict[str, str] = {}
    for arg in args:
        key = arg.split("=", 1)[0].strip()
        keyed.pop(key, None)
        keyed[key] = arg
    return list(keyed.values())


def sweep_sub_runs(
    cfg: Any, run: Run, name: str, command: list[str], args: Sequence[str], preset: str | None = None
) -> list[dict[str, Any]]:
    """One core sweep of the compare (``command`` over the grid in ``args``) in ``<compare run>/runs/<name>/``;
    returns its status entries in grid order (``run_dir``, ``values``). Sub-runs that had finished before
    (a resumed compare) are skipped and reported as ``reusing DIR``; a failed sub-run stops the compare with
    the way to resume it."""
    from workbench.sweep import run_sweep
    from workbench.sweep.keys import sweep_options

    run.commit()  # the sub-runs are the sweep's: a resumed compare never rolls back runs it finished
    where = run.dir / "runs" / name
    where.mkdir(parents=True, exist_ok=True)
    before: set[str] = set()
    if (where / "status.json").is_file():
        before = {e["name"] for e in json.loads((where / "status.json").read_text())["runs"] if e["status"] == "done"}
    head = ["--preset", preset] if preset else []
    sweep = run_sweep(command, [*head, *last_wins(args)], sweep_options(cfg), sweep_dir=where)
    if sweep.exit_code == 130:  # the sweep was interrupted: stop like any command (save, say how to resume)
        raise KeyboardInterrupt
    failed = [e["name"] for e in sweep.runs if e["status"] != "done"]
    if failed:
        raise WorkbenchError(
            f"{len(failed)} sub-runs failed ({', '.join(failed)}); see status.md and logs/ in {where}, then: "
            f"workbench compress compare --resume {run.dir}"
        )
    for e in sweep.runs:
        if e["name"] in before:
            print(f"reusing {e['run_dir']}")
    return sweep.runs


def run(cfg: CompareConfig, run: Run) -> dict:
    if cfg.protocol in PRUNE_PROTOCOLS:
        from compression.pruning.compare import run_compare
    else:
        from compression.kd.compare import run_compare
    return run_compare(cfg, run)
