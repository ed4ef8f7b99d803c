"""CIFAR-10 / CIFAR-100: torchvision's readers over the python pickle batches in
``<root>/cifar-10-batches-py`` and ``<root>/cifar-100-python``.

torchvision checks the md5 of every batch before reading. The subclasses below keep its reader but
check presence only (``md5=None`` makes ``check_integrity`` test that the file exists): any
re-packed copy of the same arrays then loads, and a damaged file still fails, at unpickling,
with a clear error. The download path keeps torchvision's md5 check of the downloaded archive.

Train augmentation: random 32x32 crop after zero-padding by 4, then a horizontal flip with p = 1/2.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from workbench.data.roots import not_found, unreadable
from workbench.data.tensor_dataset import TensorImageDataset

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo

CROP_PADDING = 4


class PresenceCheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 reader with the per-file md5 check reduced to a presence check."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class PresenceCheckedCIFAR100(CIFAR100):
    """torchvision's CIFAR100 reader (fine labels) with the per-file md5 check reduced to a presence check."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


READERS: dict[str, type[CIFAR10]] = {"cifar10": PresenceCheckedCIFAR10, "cifar100": PresenceCheckedCIFAR100}


def prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    """Check that every batch and the meta file are in place (downloading them if asked); return their folder."""
    reader = READERS[info.name]
    folder = root / reader.base_folder
    files = [name for name, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
    if all((folder / name).is_file() for name in files):
        return folder
    if download:
        reader(root, train=True, download=True)
        return folder
    raise not_found(info.name, root, f"{reader.base_folder}/ with {', '.join(files)}", info.how_to_get, True)


def load(info: DatasetInfo, root: Path, train: bool, augment: bool, download: bool) -> TensorImageDataset:
    """Read the train (50,000) or test (10,000) split as a (N, 3, 32, 32) uint8 tensor dataset."""
    folder = prepare(info, root, download)
    try:
        tv = READERS[info.name](root, train=train, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise unreadable(info.name, folder, err) from err
    return TensorImageDataset(
        torch.from_numpy(tv.data).permute(0, 3, 1, 2).contiguous(),
        tv.targets,
        info,
        tv.classes,
        crop_padding=CROP_PADDING if augment else 0,
        hflip=augment,
    )
