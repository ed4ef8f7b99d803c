"""Datasets by name, loaded from a data root (``data_root=``, then ``$WORKBENCH_DATA``, then
``~/.cache/workbench``) through torchvision's readers.

>>> from workbench.data import get_dataset
>>> train = get_dataset("digits", "train", subset=100)
"""

from workbench.data.config import DataConfig, load_splits
from workbench.data.registry import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    LabelledDataset,
    dataset_info,
    fraction_split,
    get_dataset,
    holdout_indices,
    is_available,
    prepare,
    stratified_indices,
)
from workbench.data.roots import ENV_VAR, resolve_data_root
from workbench.data.tensor_dataset import TensorImageDataset

__all__ = [
    "DATASETS",
    "DataConfig",
    "ENV_VAR",
    "SPLITS",
    "DatasetInfo",
    "LabelledDataset",
    "TensorImageDataset",
    "dataset_info",
    "fraction_split",
    "get_dataset",
    "holdout_indices",
    "is_available",
    "load_splits",
    "prepare",
    "resolve_data_root",
    "stratified_indices",
]
