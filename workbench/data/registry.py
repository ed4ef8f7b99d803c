"""The dataset registry: names, their facts (DatasetInfo), loading and preparation.

Every dataset returned by ``get_dataset`` yields (float image tensor normalised with the dataset's
mean/std, int label) and has ``.targets`` (int64 tensor, one label per item), ``.classes`` and
``.info``. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from workbench.data import cifar, digits, fashion_mnist, folders
from workbench.data.folders import ImageFileDataset
from workbench.data.roots import resolve_data_root
from workbench.data.tensor_dataset import TensorImageDataset
from workbench.errors import WorkbenchError, unknown

SPLITS = ("train", "test")
LabelledDataset = TensorImageDataset | ImageFileDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset. ``mean``/``std`` are per-channel over the training images scaled to 0..1."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    how_to_get: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion-mnist",
            10,
            1,
            (28, 28),
            (0.2860,),
            (0.3530,),
            "Fashion-MNIST: 60,000 train / 10,000 test grey 28x28 images of clothing, 10 classes",
            "Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist) is unpacked "
            "automatically; else the IDX files from github.com/zalandoresearch/fashion-mnist",
        ),
        DatasetInfo(
            "digits",
            10,
            1,
            (8, 8),
            (0.3054,),
            (0.3761,),
            "sklearn digits: 1,797 grey 8x8 handwritten digits, fixed stratified 80/20 split (1,437 / 360)",
            "ships with scikit-learn (sklearn.datasets.load_digits)",
        ),
        DatasetInfo(
            "cifar10",
            10,
            3,
            (32, 32),
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            "CIFAR-10: 50,000 train / 10,000 test colour 32x32 images, 10 classes",
            "the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked",
        ),
        DatasetInfo(
            "cifar100",
            100,
            3,
            (32, 32),
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            "CIFAR-100: 50,000 train / 10,000 test colour 32x32 images, 100 fine classes",
            "the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked",
        ),
        DatasetInfo(
            "tiny-imagenet",
            200,
            3,
            (64, 64),
            (0.4802, 0.4481, 0.3975),
            (0.2770, 0.2691, 0.2821),
            "Tiny-ImageNet: 100,000 train / 10,000 val (used as test) colour 64x64 images, 200 classes",
            f"{folders.TINY_URL}, unzipped",
        ),
        DatasetInfo(
            "imagenet-subset",
            100,
            3,
            (224, 224),
            IMAGENET_MEAN,
            IMAGENET_STD,
            "a class subset of ImageNet (ImageNet-100 by default) in ImageFolder layout, val used as test",
            "made from ILSVRC-2012 (image-net.org): the chosen classes' images, e.g. the ImageNet-100 list",
        ),
    )
}

SOURCES: dict[str, ModuleType] = {
    "fashion-mnist": fashion_mnist,
    "digits": digits,
    "cifar10": cifar,
    "cifar100": cifar,
    "tiny-imagenet": folders,
    "imagenet-subset": folders,
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; an unknown name raises WorkbenchError with a suggestion."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    return DATASETS[name]


def prepare(name: str, data_root: str | os.PathLike[str] | None = None, download: bool = False) -> Path:
    """Make dataset ``name`` ready under the data root and return the folder holding its files.

    Fashion-MNIST is unpacked from the system copy when needed; the others are checked for presence
    (and fetched by torchvision when ``download=True`` and the dataset is downloadable). A dataset that
    cannot be found raises a one-line WorkbenchError naming the ways to provide it.
    """
    info = dataset_info(name)
    return SOURCES[name].prepare(info, resolve_data_root(data_root), download)


def stratified_indices(targets: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-stratified random subset of ``n`` of the items labelled ``targets``.

    Class c with n_c of the N items gets floor(n * n_c / N) items, and the n - sum(floors) left over go
    one each to the classes with the largest remainders (n * n_c mod N; ties to the lower label). The
    items within a class are a random choice seeded by ``seed``.
    """
    targets = torch.as_tensor(targets, dtype=torch.long)
    total = len(targets)
    if not 1 <= n <= total:
        raise WorkbenchError(f"subset={n} must be between 1 and the split's {total} items")
    labels, counts = torch.unique(targets, return_counts=True)
    take = counts * n // total
    remainder = counts * n % total
    left = n - int(take.sum())
    take[torch.argsort(remainder, descending=True, stable=True)[:left]] += 1
    return _draw_per_class(targets, labels.tolist(), take.tolist(), seed)[0]


def _draw_per_class(
    targets: torch.Tensor, labels: list[int], take: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(picked, rest)``: ``take[i]`` random items of class ``labels[i]`` (one seeded permutation per class, in
    label order), and the other items of those classes; both sorted index tensors."""
    generator = torch.Generator().manual_seed(seed)
    picked, rest = [], []
    for label, k in zip(labels, take):
        members = (targets == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        picked.append(members[:k])
        rest.append(members[k:])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def fraction_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rest, held_out)``: ``round(fraction · n_c)`` random items of every class c held out (a per-class
    validation split), the rest kept; sorted index tensors, the same for the same ``(fraction, seed)``."""
    targets = torch.as_tensor(targets, dtype=torch.long)
    labels = torch.unique(targets).tolist()
    take = [int(round(fraction * int((targets == c).sum()))) for c in labels]
    held, rest = _draw_per_class(targets, labels, take, seed)
    return rest, held


def holdout_indices(
    targets: torch.Tensor, n: int, seed: int, avoid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(held_out, rest)``: a class-stratified random choice of ``n`` items, and every other item.

    The ``n`` items are drawn (``stratified_indices`` with ``seed``) from the items not in ``avoid``, e.g.
    the images a model was trained on, so that a validation split measures generalisation; when fewer
    than ``n`` items lie outside ``avoid`` they are drawn from all items. Both are sorted index tensors.
    """
    targets = torch.as_tensor(targets, dtype=torch.long)
    total = len(targets)
    if not 1 <= n < total:
        raise WorkbenchError(f"a held-out split of {n} items needs 1 <= n < the split's {total} items")
    pool = torch.arange(total)
    if avoid is not None and len(avoid):
        outside = torch.ones(total, dtype=torch.bool)
        outside[torch.as_tensor(avoid, dtype=torch.long)] = False
        if int(outside.sum()) >= n:
            pool = outside.nonzero().squeeze(1)
    held = pool[stratified_indices(targets[pool], n, seed)].sort().values
    keep = torch.ones(total, dtype=torch.bool)
    keep[held] = False
    return held, keep.nonzero().squeeze(1)


def get_dataset(
    name: str,
    split: str = "train",
    data_root: str | os.PathLike[str] | None = None,
    augment: bool = True,
    subset: int | None = None,
    download: bool = False,
    seed: int = 0,
) -> LabelledDataset:
    """Load one split of dataset ``name`` from the data root (see ``resolve_data_root``).

    ``augment`` applies the dataset's standard train augmentation, and only to ``split="train"``.
    ``subset=n`` keeps a class-stratified subset of n items chosen with ``seed`` (see
    ``stratified_indices``); the same (n, seed) always gives the same items.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    train = split == "train"
    dataset = SOURCES[name].load(info, resolve_data_root(data_root), train, augment and train, download)
    if subset is not None:
        dataset = dataset.select(stratified_indices(dataset.targets, subset, seed))
    return dataset


def is_available(name: str, data_root: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``name`` can be loaded offline from the data root (Fashion-MNIST: or the system copy)."""
    try:
        prepare(name, data_root, download=False)
    except WorkbenchError:
        return False
    return True
