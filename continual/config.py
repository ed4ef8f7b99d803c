"""Typed configs of ``workbench cil run`` and ``workbench cil compare``.

The common keys are below; every registered method's section (``etag.*``, ``ir.*``, ``baseline.*``, ...) is
its own ``keys`` dataclass, read from ``continual.registry.CIL_METHODS`` (a method declares its keys and
defaults once, beside its code). The optimizer and schedule choices are the core's (``workbench.optim``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from continual.benchmarks import PROTOCOLS, task_sizes
from continual.registry import CIL_METHODS
from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError, unknown
from workbench.optim import OPTIMIZERS, SCHEDULES
from workbench.sweep.keys import SweepKeys

METHODS = CIL_METHODS.names()
BENCHMARK_NAMES = tuple(PROTOCOLS)
MODEL_CHOICES = ("auto", "small_cnn", "mlp", "resnet20", "resnet32", "resnet8x4", "resnet18")


@dataclasses.dataclass
class CILBase(CommonConfig):
    """``workbench cil run`` keys."""

    benchmark: str = opt("split-fmnist-5", "class-incremental protocol", BENCHMARK_NAMES)
    method: str = opt("etag", "class-incremental method (continual.registry.CIL_METHODS)", METHODS)
    model: str = opt("auto", "backbone (auto: small_cnn for fmnist, mlp for digits, resnet18 for CIFAR/Tiny)")
    data_root: str | None = opt(None, "dataset folder (default $WORKBENCH_DATA, then ~/.cache/workbench)")
    download: bool = opt(False, "let torchvision download a missing dataset")
    subset: int | None = opt(None, "train on a fixed class-stratified subset of N training images", ge=1)
    test_subset: int | None = opt(None, "evaluate on a fixed class-stratified subset of N evaluation images", ge=1)
    validation: float = opt(
        0.0, "evaluate on this fraction of the training images (per class) instead of the test set", ge=0, lt=1
    )
    augment: bool = opt(False, "random crop (+ flip where the dataset uses it) on training images")
    class_order: list[int] = opt(
        [], "class order; empty = a permutation drawn from the seed (written back)", drawn=True
    )
    task_sizes: list[int] = opt(
        [], "classes per task instead of the protocol's, e.g. 4,2,2,2 (sum = the classes)", ge=1
    )
    max_tasks: int = opt(0, "stop after this many tasks (0 = the whole stream; for smoke tests)", ge=0)
    epochs: int = opt(5, "epochs per task", ge=1)
    batch_size: int = opt(128, "training batch size (before the 4 rotations of eTag/IR)", ge=1)
    optimizer: str = opt("sgd", "optimizer of every task", OPTIMIZERS)
    lr: float = opt(0.01, "learning rate at the start of every task", gt=0)
    momentum: float = opt(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = opt(0.0, "weight decay", ge=0)
    schedule: str = opt("none", "per-task learning-rate schedule over epochs", SCHEDULES)
    step_size: int = opt(30, "epochs between ÷10 of the step schedule", ge=1)
    milestones: list[int] = opt([], "epochs where multistep multiplies the lr by gamma", ge=1)
    gamma: float = opt(0.1, "decay factor of step/multistep", gt=0)
    eval_batch_size: int = opt(512, "evaluation batch size", ge=1)
    num_workers: int = opt(0, "DataLoader worker processes", ge=0)
    log_every: int = opt(20, "log training loss terms every N iterations", ge=1)
    progress: bool = opt(True, "show a progress bar")

    def validate(self) -> None:
        if self.model not in MODEL_CHOICES:
            raise unknown("model", self.model, MODEL_CHOICES)
        check_method(self, self.method)
        if self.class_order and sorted(self.class_order) != list(range(len(self.class_order))):
            raise WorkbenchError(
                f"bad value for 'class_order': {self.class_order}; must be a permutation of 0..N−1 (N classes)"
            )


def check_method(cfg: Any, method: str) -> None:
    """Refuse, before anything is written, a method whose first task is too small, then the method's own checks."""
    entry = CIL_METHODS[method]
    first = task_sizes(cfg)[0]
    if first < entry.min_first_task:
        raise WorkbenchError(
            f"method={method} needs at least {entry.min_first_task} classes in the first task (it learns its backbone "
            f"there), got {first}; give a larger first task, e.g. task_sizes={entry.min_first_task},..."
        )
    entry.validate(cfg)


def _sections() -> list[tuple[str, type, Any]]:
    """One nested field per distinct method section, in registration order."""
    out, seen = [], set()
    for name, entry in CIL_METHODS.items():
        if entry.section and entry.section not in seen:
            seen.add(entry.section)
            meta = {"help": name, "choices": None}
            out.append((entry.section, entry.keys, dataclasses.field(default_factory=entry.keys, metadata=meta)))
    return out


CILConfig = dataclasses.make_dataclass("CILConfig", _sections(), bases=(CILBase,))
CILConfig.__module__ = __name__
CILConfig.__doc__ = CILBase.__doc__


def compare_default() -> list[str]:
    """Every registered method, the ones that retrain from scratch (the upper bound) last."""
    return sorted(CIL_METHODS.names(), key=lambda m: CIL_METHODS[m].retrains)


@dataclasses.dataclass
class CompareConfig(SweepKeys, CILConfig):
    """``workbench cil compare`` keys: every ``cil run`` key, plus the methods and seeds to compare."""

    methods: list[str] = opt(compare_default(), "methods to compare", METHODS)
    seeds: list[int] = opt([0, 1, 2], "seeds of every method")

    def validate(self) -> None:
        super().validate()
        if not self.methods:
            raise WorkbenchError("bad value for 'methods': give at least one method, e.g. methods=naive,etag")
        if not self.seeds:
            raise WorkbenchError("bad value for 'seeds': give at least one seed, e.g. seeds=0,1,2")
        if self.class_order:
            raise WorkbenchError("class_order is drawn per seed in a comparison; drop 'class_order'")
        for method in self.methods:
            check_method(self, method)
