"""The dataset keys of the supervised commands and the train/test splits they select.

One home for what ``workbench train``, the KD family and the CIL backbones share: a command's config
inherits :class:`DataConfig`, and :func:`load_splits` turns it into the two datasets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workbench.config import opt


@dataclasses.dataclass
class DataConfig:
    """Dataset keys shared by the supervised commands."""

    dataset: str = opt("fashion-mnist", "dataset name (workbench data list)")
    data_root: str | None = opt(None, "dataset folder (default $WORKBENCH_DATA, then ~/.cache/workbench)")
    download: bool = opt(False, "let torchvision download a missing dataset")
    subset: int | None = opt(None, "train on a fixed, class-stratified subset of N images")
    test_subset: int | None = opt(None, "evaluate on a fixed, class-stratified subset of N test images")
    augment: bool = opt(True, "standard train-time augmentation of the dataset")


def load_splits(cfg: DataConfig, seed: int) -> tuple[Any, Any]:
    """Train and test datasets of ``cfg`` (errors name the ways to provide missing data)."""
    from workbench.data.registry import get_dataset

    kw = dict(data_root=cfg.data_root, download=cfg.download, seed=seed)
    train = get_dataset(cfg.dataset, "train", augment=cfg.augment, subset=cfg.subset, **kw)
    test = get_dataset(cfg.dataset, "test", augment=False, subset=cfg.test_subset, **kw)
    return train, test
