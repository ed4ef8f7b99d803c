"""Datasets by name, loaded from a data root (``data_root=``, then ``$WORKBENCH_DATA``, then
``~/.cache/workbench``) through torchvision's readers.

>>> from workbench.data import get_dataset
>>> train = get_dataset("digits", "train", subset=100)
"""

from workbench.data.registry import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    LabelledDataset,
    dataset_info,
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
    "ENV_VAR",
    "SPLITS",
    "DatasetInfo",
    "LabelledDataset",
    "TensorImageDataset",
    "dataset_info",
    "get_dataset",
    "holdout_indices",
    "is_available",
    "prepare",
    "resolve_data_root",
    "stratified_indices",
]
