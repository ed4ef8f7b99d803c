"""``workbench compress compare protocol=... methods=... seeds=...``: dispatches to the protocol's family."""

from __future__ import annotations

import dataclasses

from workbench.config import CommonConfig, opt
from workbench.runs import Run

PRUNE_PROTOCOLS = ("sglp-fmnist", "prune-fmnist", "sglp-cifar10")
KD_PROTOCOLS = ("kd-fmnist", "cifar100-kd")


@dataclasses.dataclass
class CompareConfig(CommonConfig):
    protocol: str = opt("kd-fmnist", "benchmark protocol (BENCHMARKS.md)", choices=PRUNE_PROTOCOLS + KD_PROTOCOLS)
    methods: list[str] = opt(
        [], "methods to compare (default: all of the protocol's); prune-fmnist rows are NAME@SCOPE, e.g. sfp@all"
    )
    seeds: list[int] = opt([0, 1, 2], "seeds")
    base_model: str = opt("", "a `workbench train` run directory to start from (default: train one per seed)")
    overrides: list[str] = opt([], "extra key=value settings passed to every sub-run, e.g. epochs=2,subset=2000")


def run(cfg: CompareConfig, run: Run) -> dict:
    if cfg.protocol in PRUNE_PROTOCOLS:
        from compression.pruning.compare import run_compare
    else:
        from compression.kd.compare import run_compare
    return run_compare(cfg, run)
