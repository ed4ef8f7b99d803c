"""The core's own commands: ``train`` and ``eval`` (config-driven), ``data``, ``bench``, ``report``, ``sweep`` (raw)."""

from __future__ import annotations

from collections.abc import Callable

from workbench.command import Command

CORE_COMMANDS: list[Command] = [
    Command(
        name="train",
        help="train a supervised model (Fashion-MNIST, digits, CIFAR, ...) with the workbench trainer",
        config="workbench.commands.train:TrainCommandConfig",
        run="workbench.commands.train:run",
        presets="commands/presets",
        name_keys=("dataset", "model"),
        resume_keys=("epochs", "eval_every", "eval_batch_size", "log_every", "data_root", "download"),
    ),
    Command(
        name="eval",
        help="test accuracy of a saved model: workbench eval model=RUN_DIR",
        config="workbench.commands.evaluate:EvalConfig",
        run="workbench.commands.evaluate:run",
        creates_run=False,
    ),
]


def _data(argv: list[str]) -> int:
    from workbench.commands.data import main

    return main(argv)


def _bench(argv: list[str]) -> int:
    from workbench.bench import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from workbench.report import main

    return main(argv)


def _sweep(argv: list[str]) -> int:
    from workbench.sweep import main

    return main(argv)


RAW_COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "data": ("list datasets and prepare them offline: workbench data list | prepare NAME...", _data),
    "bench": ("speed and memory ratios against reference implementations: workbench bench [NAME...]", _bench),
    "report": ("tables (mean ± std over seeds) from run directories: workbench report PATH...", _report),
    "sweep": ("run any command over a grid (local pool or SLURM), resumable: workbench sweep COMMAND key=a,b", _sweep),
}
