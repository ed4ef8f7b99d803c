"""Fashion-MNIST: torchvision's ``FashionMNIST`` reader over the IDX files in ``<root>/FashionMNIST/raw/``.

Preparation unpacks the four gzipped IDX files into that directory, taking them from (in order)
``.gz`` copies already in ``raw/``, Debian's system copy (package ``dataset-fashion-mnist``,
``SYSTEM_COPY``: ``$WORKBENCH_SYSTEM_DATASETS/fashion-mnist``, by default under ``/usr/share/datasets``), or,
only with ``download=True``, torchvision's download.

Train augmentation: random 28x28 crop after zero-padding by 2. No flips: every shoe and bag in
the data faces the same way, so mirrored images would show the model a view the test set never has.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from torchvision.datasets import FashionMNIST

from workbench.data.roots import not_found, unreadable
from workbench.data.tensor_dataset import TensorImageDataset

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo

SYSTEM_DATASETS_ENV = "WORKBENCH_SYSTEM_DATASETS"
SYSTEM_COPY = Path(os.environ.get(SYSTEM_DATASETS_ENV) or "/usr/share/datasets") / "fashion-mnist"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CROP_PADDING = 2


def raw_dir(root: Path) -> Path:
    """The directory torchvision's FashionMNIST reads: ``<root>/FashionMNIST/raw``."""
    return root / FashionMNIST.__name__ / "raw"


def _gunzip(src: Path, dst: Path) -> None:
    """Unpack ``src`` into ``dst`` through a temporary file and a rename, so a reader never sees half a file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with gzip.open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    """Make the four unpacked IDX files present in ``<root>/FashionMNIST/raw`` and return that directory."""
    raw = raw_dir(root)
    for name in FILES:
        if (raw / name).is_file():
            continue
        sources = [d / f"{name}.gz" for d in (raw, SYSTEM_COPY) if (d / f"{name}.gz").is_file()]
        if not sources:
            break
        try:
            _gunzip(sources[0], raw / name)
        except (OSError, EOFError) as err:
            raise unreadable(info.name, sources[0], err) from err
    else:
        return raw
    if download:
        FashionMNIST(root, train=True, download=True)
        return raw
    raise not_found(
        info.name, root, f"{raw.relative_to(root)}/ holding {', '.join(FILES)} or their .gz", info.how_to_get, True
    )


def load(info: DatasetInfo, root: Path, train: bool, augment: bool, download: bool) -> TensorImageDataset:
    """Read the train (60,000) or test (10,000) split as a (N, 1, 28, 28) uint8 tensor dataset."""
    raw = prepare(info, root, download)
    try:
        tv = FashionMNIST(root, train=train, download=False)
    except (RuntimeError, ValueError, TypeError) as err:
        raise unreadable(info.name, raw, err) from err
    return TensorImageDataset(
        tv.data.unsqueeze(1).contiguous(),
        tv.targets,
        info,
        tv.classes,
        crop_padding=CROP_PADDING if augment else 0,
    )
