"""sklearn's digits (UCI optical digits): 1,797 images of 8x8 pixels valued 0..16, 10 classes.

The data ship with scikit-learn (``sklearn.datasets.load_digits``), so nothing is prepared.
Pixels are scaled to 0..1 by dividing by 16. The train/test split is fixed: a class-stratified
80/20 split by ``sklearn.model_selection.train_test_split(random_state=0)``, 1,437 train and
360 test images. No augmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.data.tensor_dataset import TensorImageDataset

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo

TEST_FRACTION = 0.2
SPLIT_SEED = 0
MAX_VALUE = 16.0


def prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    """Nothing to do (scikit-learn ships the data); returns ``root`` unchanged."""
    return root


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified (train, test) index split of the 1,797 digits."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)


def load(info: DatasetInfo, root: Path, train: bool, augment: bool, download: bool) -> TensorImageDataset:
    """Read one split as a (N, 1, 8, 8) uint8 tensor dataset with values 0..16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = split_indices(digits.target)[0 if train else 1]
    images = torch.from_numpy(digits.images[index].astype(np.uint8)).unsqueeze(1)
    return TensorImageDataset(
        images,
        torch.from_numpy(digits.target[index]),
        info,
        [str(c) for c in digits.target_names],
        max_value=MAX_VALUE,
    )
