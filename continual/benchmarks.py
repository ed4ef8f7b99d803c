"""Class-incremental protocols as Avalanche streams.

Data comes from the workbench registry (``workbench.data.get_dataset``); the stream from Avalanche's
``class_incremental_benchmark`` with an explicit class order and an explicit number of classes per
experience, so that no class is silently dropped (Avalanche's ``num_experiences`` path floors
``classes // experiences``). Class labels keep their dataset ids (one head over all classes).

Protocols (BENCHMARKS.md): ``split-fmnist-5`` and ``split-digits-5`` (5 tasks × 2 classes, cold start),
``fmnist-b4-3`` (warm start: 4 base classes, then 3 tasks × 2),
``cifar100-b0-10`` (10 × 10), ``cifar100-b50-5`` / ``-b50-10`` (50 base classes, then 5 or 10 equal
tasks), ``tiny-imagenet-b0-10`` (10 × 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import WorkbenchError, unknown
from workbench.seeding import derive_seed


@dataclass(frozen=True)
class Protocol:
    """A class-incremental protocol: ``base`` classes in task 0 (0 = equal split), then ``tasks`` tasks."""

    name: str
    dataset: str
    tasks: int
    base: int
    model: str

    def classes_per_task(self, num_classes: int) -> list[int]:
        """Number of classes of every task; refuses splits that would drop or unbalance classes."""
        if self.base == 0:
            if num_classes % self.tasks:
                raise WorkbenchError(
                    f"{self.name}: {num_classes} classes do not divide into {self.tasks} equal tasks; "
                    f"use a number of tasks that divides {num_classes}"
                )
            return [num_classes // self.tasks] * self.tasks
        rest = num_classes - self.base
        if rest <= 0 or rest % self.tasks:
            raise WorkbenchError(
                f"{self.name}: {rest} classes after the {self.base} base classes do not divide into "
                f"{self.tasks} equal tasks; use a number of tasks that divides {rest}"
            )
        return [self.base] + [rest // self.tasks] * self.tasks


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("split-fmnist-5", "fashion-mnist", 5, 0, "small_cnn"),
        Protocol("fmnist-b4-3", "fashion-mnist", 3, 4, "small_cnn"),
        Protocol("split-digits-5", "digits", 5, 0, "mlp"),
        Protocol("cifar100-b0-10", "cifar100", 10, 0, "resnet18"),
        Protocol("cifar100-b50-5", "cifar100", 5, 50, "resnet18"),
        Protocol("cifar100-b50-10", "cifar100", 10, 50, "resnet18"),
        Protocol("tiny-imagenet-b0-10", "tiny-imagenet", 10, 0, "resnet18"),
    )
}


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown("benchmark", name, PROTOCOLS)
    return PROTOCOLS[name]


def task_sizes(cfg: Any) -> list[int]:
    """Classes of every task: ``cfg.task_sizes`` when given (it must sum to the dataset's classes), else the
    protocol's split."""
    from workbench.data import dataset_info

    proto = protocol(cfg.benchmark)
    num_classes = dataset_info(proto.dataset).num_classes
    sizes = list(getattr(cfg, "task_sizes", []) or [])
    if not sizes:
        return proto.classes_per_task(num_classes)
    if sum(sizes) != num_classes or min(sizes) < 1:
        raise WorkbenchError(
            f"bad value for 'task_sizes': {sizes} sums to {sum(sizes)}, {proto.dataset} has {num_classes} classes; "
            f"give positive sizes that sum to {num_classes}, e.g. task_sizes={num_classes - 6},2,2,2"
        )
    return sizes


def default_class_order(num_classes: int, seed: int) -> list[int]:
    """The class order of master seed ``seed``: a permutation drawn from ``derive_seed(seed, "class-order")``."""
    g = torch.Generator().manual_seed(derive_seed(seed, "class-order"))
    return torch.randperm(num_classes, generator=g).tolist()


def split_by_order(class_order: list[int], sizes: list[int]) -> list[list[int]]:
    """The classes of every task: consecutive slices of ``class_order`` of the given sizes."""
    out, start = [], 0
    for n in sizes:
        out.append(list(class_order[start : start + n]))
        start += n
    return out


def validation_indices(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: ``round(fraction · n_c)`` items of every class c go to validation, drawn with
    ``derive_seed(seed, "validation")`` (the core's ``workbench.data.fraction_split``)."""
    from workbench.data import fraction_split

    return fraction_split(targets, fraction, derive_seed(seed, "validation"))


#: crop padding and flip of the CIL protocols (crop + flip of normalised items: ``workbench.data.CropFlip``)
AUGMENTATION = {"fashion-mnist": (2, False), "digits": (1, False), "cifar100": (4, True), "tiny-imagenet": (8, True)}


@dataclass
class Stream:
    """An Avalanche scenario plus the facts the run needs."""

    scenario: Any
    class_order: list[int]
    task_classes: list[list[int]]
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    dataset: str
    eval_split: str

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    def old_units(self, task: int) -> float:
        """k of eTag: classes seen before ``task`` ÷ classes per incremental task (0 for task 0)."""
        seen = sum(len(c) for c in self.task_classes[:task])
        per_task = len(self.task_classes[-1])
        return seen / per_task


def load_data(cfg: Any, proto: Protocol) -> tuple[Any, Any, str]:
    """Train and evaluation datasets (unaugmented) of ``cfg``; the evaluation set is carved from the training
    data when ``cfg.validation > 0`` (the test set is then never read)."""
    from workbench.data import get_dataset

    kw = dict(data_root=cfg.data_root, download=cfg.download, augment=False, seed=cfg.seed)
    train = get_dataset(proto.dataset, "train", subset=cfg.subset, **kw)
    if cfg.validation > 0:
        tr_idx, val_idx = validation_indices(train.targets, cfg.validation, cfg.seed)
        evaluation, train = train.select(val_idx), train.select(tr_idx)
        split = "val"
    else:
        evaluation = get_dataset(proto.dataset, "test", **kw)
        split = "test"
    if cfg.test_subset is not None:
        from workbench.data import stratified_indices

        evaluation = evaluation.select(stratified_indices(evaluation.targets, cfg.test_subset, cfg.seed))
    return train, evaluation, split


def build_stream(cfg: Any) -> Stream:
    """The Avalanche class-incremental scenario of ``cfg`` (``benchmark``, ``seed``, ``class_order``, data keys).

    Raises WorkbenchError (before anything is trained) for an unknown benchmark, a class count that does not
    split evenly, a class order of the wrong length, or missing data.
    """
    from workbench.data import dataset_info

    proto = protocol(cfg.benchmark)
    info = dataset_info(proto.dataset)
    sizes = task_sizes(cfg)
    order = list(cfg.class_order) or default_class_order(info.num_classes, cfg.seed)
    if len(order) != info.num_classes:
        raise WorkbenchError(
            f"bad value for 'class_order': {len(order)} classes given, {proto.dataset} has {info.num_classes}"
        )
    train, evaluation, split = load_data(cfg, proto)
    for name, data in (("training", train), ("evaluation", evaluation)):
        missing = sorted(set(range(info.num_classes)) - set(torch.unique(data.targets).tolist()))
        if missing:
            raise WorkbenchError(
                f"the {name} data of {proto.dataset} has no images of classes {missing[:10]}; "
                "use a larger subset/test_subset or a smaller validation fraction"
            )
    from workbench.data.tensor_dataset import CropFlip

    train_transform = None
    if cfg.augment and proto.dataset in AUGMENTATION:
        pad, flip = AUGMENTATION[proto.dataset]
        train_transform = CropFlip(pad, flip, info.mean, info.std)  # the core's, on normalised items
    stream = make_stream(train, evaluation, order, sizes, train_transform)
    stream.in_channels, stream.image_size = info.in_channels, tuple(info.image_size)
    stream.dataset, stream.eval_split = proto.dataset, split
    return stream


def make_stream(train: Any, evaluation: Any, order: list[int], sizes: list[int], train_transform: Any = None) -> Stream:
    """Avalanche's ``class_incremental_benchmark`` over two datasets with ``.targets`` (items ``(x, y)``): tasks
    of ``sizes`` classes taken in ``order``; ``train_transform`` applies to training items only (the train
    group: ``experience.dataset.eval()`` gives the unaugmented items)."""
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset

    groups: dict[str, Any] = {"train": train_transform, "eval": None}
    datasets = {
        "train": _make_taskaware_classification_dataset(train, transform_groups=groups),
        "test": _make_taskaware_classification_dataset(evaluation, transform_groups=groups),
    }
    scenario = class_incremental_benchmark(datasets, class_order=order, num_classes_per_exp=sizes)
    return Stream(
        scenario=scenario,
        class_order=list(order),
        task_classes=split_by_order(order, sizes),
        num_classes=len(order),
        in_channels=1,
        image_size=(1, 1),
        dataset="tensors",
        eval_split="test",
    )
