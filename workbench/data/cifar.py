"""CIFAR-10 / CIFAR-100: the python pickle batches in ``<root>/cifar-10-batches-py`` and
``<root>/cifar-100-python``, read without executing code.

A pickle can name any importable callable, so a tampered batch would run its payload on
``pickle.load``. The batches are read with :mod:`workbench.data.safe_pickle`'s restricted unpickler,
which admits only what the format holds: numpy's array reconstruction (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode`` (bytes in protocol-2 pickles); anything else is
refused before it is called. Every batch is then checked for its structure: a dict with a uint8 ``data`` array of
rows of 3,072 values and one label in ``[0, classes)`` per row. A re-packed copy of the same arrays
loads; ``workbench data prepare`` also reports whether the files are byte-identical to the official
release (the md5 sums torchvision lists). torchvision's own download (``download=true``) checks the md5
of the archive it fetches.

Train augmentation: random 32x32 crop after zero-padding by 4, then a horizontal flip with p = 1/2.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from workbench.data.roots import not_found, unreadable
from workbench.data.safe_pickle import NUMPY_ARRAYS, RestrictedUnpickler, restricted_load
from workbench.data.tensor_dataset import TensorImageDataset
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo

CROP_PADDING = 4
ROW = 3 * 32 * 32


@dataclass(frozen=True)
class Layout:
    """Where a CIFAR release keeps its batches, the md5 of each official file, and the label keys."""

    folder: str
    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    label_key: str
    names_key: str
    reader: type[CIFAR10]

    def files(self) -> list[tuple[str, str]]:
        return [*self.train, *self.test, self.meta]


def _layout(tv: type[CIFAR10], label_key: str, names_key: str) -> Layout:
    return Layout(
        tv.base_folder,
        tuple((n, m) for n, m in tv.train_list),
        tuple((n, m) for n, m in tv.test_list),
        (tv.meta["filename"], tv.meta["md5"]),
        label_key,
        names_key,
        tv,
    )


LAYOUTS: dict[str, Layout] = {
    "cifar10": _layout(CIFAR10, "labels", "label_names"),
    "cifar100": _layout(CIFAR100, "fine_labels", "fine_label_names"),
}


class SafeUnpickler(RestrictedUnpickler):
    """The restricted unpickler with the globals of a CIFAR batch (numpy arrays)."""

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        super().__init__(file, NUMPY_ARRAYS, **kwargs)


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` admitting numpy arrays only (``latin1`` for the Python 2 strings of the release)."""
    return restricted_load(path, NUMPY_ARRAYS, encoding="latin1")


def _text(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def read_entry(name: str, path: Path) -> dict[str, Any]:
    """One pickled dict of the release, its keys as str; a damaged or tampered file is a one-line WorkbenchError."""
    try:
        entry = safe_load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise unreadable(name, path, err) from None
    except (MemoryError, RecursionError, OverflowError) as err:
        raise unreadable(name, path, err) from None
    if not isinstance(entry, dict):
        raise unreadable(name, path, ValueError(f"holds a {type(entry).__name__}, not a dict"))
    return {_text(k): v for k, v in entry.items()}


def read_batch(name: str, path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, labels)`` of one batch: ``rows`` (N, 3072) uint8, ``labels`` (N,) int64 in ``[0, num_classes)``."""
    entry = read_entry(name, path)
    rows, labels = entry.get("data"), entry.get(label_key)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != ROW:
        got = f"{rows.dtype} {rows.shape}" if isinstance(rows, np.ndarray) else type(rows).__name__
        raise unreadable(name, path, ValueError(f"'data' must be a uint8 array of rows of {ROW} values, got {got}"))
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(rows):
        raise unreadable(name, path, ValueError(f"'{label_key}' must hold one label per row"))
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise unreadable(name, path, ValueError(f"'{label_key}' must hold integers"))
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise unreadable(name, path, ValueError(f"labels outside 0..{num_classes - 1}"))
    return rows, labels


def read_classes(name: str, path: Path, names_key: str, num_classes: int) -> list[str]:
    entry = read_entry(name, path)
    names = entry.get(names_key)
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(_text(n), str) for n in names):
        raise unreadable(name, path, ValueError(f"'{names_key}' must list {num_classes} class names"))
    return [_text(n) for n in names]


def prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    """Check that every batch and the meta file are in place (downloading them if asked); return their folder."""
    layout = LAYOUTS[info.name]
    folder = root / layout.folder
    files = [name for name, _ in layout.files()]
    if all((folder / name).is_file() for name in files):
        return folder
    if download:
        layout.reader(root, train=True, download=True)
        return folder
    raise not_found(info.name, root, f"{layout.folder}/ with {', '.join(files)}", info.how_to_get, True)


def verify(info: DatasetInfo, root: Path) -> str:
    """Read every file safely and check its structure (what ``workbench data prepare`` calls ready); return a
    note saying whether the files are the official release (md5) or a re-packed copy."""
    layout = LAYOUTS[info.name]
    folder = prepare(info, root, download=False)
    counts = {}
    for split, files in (("train", layout.train), ("test", layout.test)):
        batches = [read_batch(info.name, folder / n, layout.label_key, info.num_classes) for n, _ in files]
        counts[split] = sum(len(labels) for _, labels in batches)
    read_classes(info.name, folder / layout.meta[0], layout.names_key, info.num_classes)
    official = all(_md5(folder / name) == md5 for name, md5 in layout.files())
    origin = "the official release (md5 checked)" if official else "not byte-identical to the official release"
    return f"{counts['train']:,} train / {counts['test']:,} test images, {origin}"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(info: DatasetInfo, root: Path, train: bool, augment: bool, download: bool) -> TensorImageDataset:
    """Read the train (50,000) or test (10,000) split as a (N, 3, 32, 32) uint8 tensor dataset."""
    layout = LAYOUTS[info.name]
    folder = prepare(info, root, download)
    parts = [
        read_batch(info.name, folder / name, layout.label_key, info.num_classes)
        for name, _ in (layout.train if train else layout.test)
    ]
    classes = read_classes(info.name, folder / layout.meta[0], layout.names_key, info.num_classes)
    rows = np.concatenate([r for r, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    if len(rows) == 0:
        raise WorkbenchError(f"dataset '{info.name}': {folder} holds no images; provide the dataset again")
    return TensorImageDataset(
        torch.from_numpy(rows.reshape(-1, 3, 32, 32)).contiguous(),
        torch.from_numpy(labels),
        info,
        classes,
        crop_padding=CROP_PADDING if augment else 0,
        hflip=augment,
    )
