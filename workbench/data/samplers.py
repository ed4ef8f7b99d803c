"""Training-order samplers of the Trainer (``sampler=`` key): ``random`` (default) and ``m_per_class``.

Both are index samplers with the same interface: ``set_epoch(epoch, start)`` selects the epoch's order, seeded
by ``derive_seed(seed, "data-order", epoch)`` only, and skips this rank's first ``start`` indices (a run
resumed mid-epoch continues the very same order); ``rank``/``world`` shard it across DDP processes.

- ``random`` (:class:`EpochSampler`): a permutation of the dataset per epoch.
- ``m_per_class`` (:class:`MPerClassSampler`): the order is a sequence of batches of ``B`` images, each made of
  ``k = B / m`` distinct classes with ``m`` distinct images each (a class with fewer than ``m`` images gives
  them with replacement), so that every anchor of a supervised contrastive loss has ``m − 1`` positives in its
  batch even with 100 classes. An epoch is ``⌊N / B⌋`` batches (at least one), about the dataset's size, as in
  the MPerClassSampler of MCL's released code (winycg/MCL ``dataset/class_sampler.py``,
  ``length_before_new_iter = N``; it uses m = 2 on CIFAR). Classes and images are drawn without replacement
  across the epoch's batches (each walks through a seeded permutation, refilled when spent), so an epoch visits
  the classes evenly and most images once; the released sampler draws them afresh for every batch (the same
  batch structure, more repeats). Under DDP rank r takes the r-th ``B / w`` slice of every batch, so ``B / w``
  must be a multiple of ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset

from workbench.errors import WorkbenchError
from workbench.registry import Registry
from workbench.seeding import derive_seed


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, optionally starting mid-epoch.

    Rank ``r`` of ``w`` yields ``perm[r::w]``; with the per-rank batch ``B/w`` the union of the ranks'
    ``k``-th batches equals the single-process ``k``-th batch of size ``B``.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch``'s order, skipping this rank's first ``start`` indices."""
        self.epoch, self.start = epoch, start

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, "data-order", self.epoch))

    def _indices(self) -> list[int]:
        perm = torch.randperm(self.n, generator=self._generator()).tolist() if self.shuffle else list(range(self.n))
        pad = (-len(perm)) % self.world
        perm += perm[:pad]
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.start


def dataset_targets(dataset: Dataset) -> torch.Tensor:
    """The int64 label of every item of ``dataset`` (``.targets``, a ``Subset`` of such, or a ``TensorDataset``'s
    second tensor), without loading the images."""
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets, dtype=torch.long)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].long()
    raise WorkbenchError(
        f"sampler=m_per_class needs the labels of the training set, but a {type(dataset).__name__} has no "
        "'.targets'; use sampler=random"
    )


class MPerClassSampler(EpochSampler):
    """Batches of ``batch_size // m`` classes × ``m`` images (module docstring), ``⌊N / B⌋`` batches an epoch."""

    def __init__(
        self, targets: torch.Tensor, m: int, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        targets = torch.as_tensor(targets, dtype=torch.long)
        super().__init__(len(targets), seed, shuffle=True, rank=rank, world=world)
        if m < 1:
            raise WorkbenchError(f"m_per_class={m} must be >= 1")
        if batch_size % (m * world):
            raise WorkbenchError(
                f"sampler=m_per_class: batch_size={batch_size} must be a multiple of m_per_class={m}"
                + (f" times the {world} DDP processes" if world > 1 else "")
            )
        self.classes, counts = torch.unique(targets, return_counts=True)
        self.by_class = [torch.nonzero(targets == c).flatten() for c in self.classes.tolist()]
        self.m, self.batch_size = m, batch_size
        self.per_batch = batch_size // m
        if self.per_batch > len(self.classes):
            raise WorkbenchError(
                f"sampler=m_per_class: a batch of {batch_size} with m_per_class={m} needs {self.per_batch} classes, "
                f"the data has {len(self.classes)}; lower batch_size or raise m_per_class"
            )
        self.num_batches = max(1, len(targets) // batch_size)

    def batches(self) -> list[list[int]]:
        """The epoch's global batches (dataset indices), ``m`` consecutive indices per class."""
        g = self._generator()
        class_queue: list[int] = []
        image_queues: list[list[int]] = [[] for _ in self.by_class]
        out = []
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in _take(class_queue, self.per_batch, len(self.classes), g):
                items = self.by_class[c]
                if len(items) >= self.m:
                    batch += [int(items[i]) for i in _take(image_queues[c], self.m, len(items), g)]
                else:
                    batch += items[torch.randint(len(items), (self.m,), generator=g)].tolist()
            out.append(batch)
        return out

    def _indices(self) -> list[int]:
        local = self.batch_size // self.world
        return [i for b in self.batches() for i in b[self.rank * local : (self.rank + 1) * local]]

    def __len__(self) -> int:
        return self.num_batches * self.batch_size // self.world - self.start


def _take(queue: list[int], k: int, n: int, g: torch.Generator) -> list[int]:
    """``k`` distinct items of ``range(n)`` (``k ≤ n``) from the front of ``queue``, refilled with a seeded
    permutation of ``range(n)`` when spent; an item already taken is left in the queue for a later call."""
    taken: list[int] = []
    while len(taken) < k:
        i = next((j for j, v in enumerate(queue) if v not in taken), None)
        if i is None:
            queue += torch.randperm(n, generator=g).tolist()
            continue
        taken.append(queue.pop(i))
    return taken


SamplerFactory = Callable[..., EpochSampler]
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


@SAMPLERS.register("random")
def _random(dataset: Dataset, seed: int, batch_size: int, rank: int, world: int, **_: Any) -> EpochSampler:
    return EpochSampler(len(dataset), seed, shuffle=True, rank=rank, world=world)


@SAMPLERS.register("m_per_class")
def _m_per_class(
    dataset: Dataset, seed: int, batch_size: int, rank: int, world: int, m_per_class: int = 4, **_: Any
) -> EpochSampler:
    return MPerClassSampler(dataset_targets(dataset), m_per_class, batch_size, seed, rank=rank, world=world)


def build_sampler(
    name: str, dataset: Dataset, seed: int, batch_size: int, rank: int = 0, world: int = 1, m_per_class: int = 4
) -> EpochSampler:
    """The training sampler ``name`` (``SAMPLERS``) over ``dataset`` for the global ``batch_size``."""
    return SAMPLERS[name](dataset, seed, batch_size, rank, world, m_per_class=m_per_class)
