"""In-memory image dataset: a uint8 (N, C, H, W) tensor plus labels, converted on access without PIL.

Each item is ``x = (img / max_value - mean) / std`` (per channel) and its int label. When built
for training with augmentation, the uint8 image is first zero-padded by ``crop_padding`` pixels
on every side and cropped back to (H, W) at a uniformly random offset (torchvision's
``RandomCrop(size, padding=p)``), then flipped left-right with probability 1/2 if ``hflip``.
Randomness comes from torch's global generator, which DataLoader seeds per worker.

``__getitems__`` lets ``torch.utils.data.DataLoader`` fetch a whole batch in one vectorised call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo


def random_crop(batch: torch.Tensor, padding: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad a (B, C, H, W) batch by ``padding`` (zeros, or the per-channel ``fill`` of shape (C,)) and take one
    random (H, W) window per image."""
    b, c, h, w = batch.shape
    if fill is None:
        padded = F.pad(batch, (padding, padding, padding, padding))
    else:
        p = padding
        padded = fill.to(batch.dtype).view(1, -1, 1, 1).expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = batch
    offsets = torch.randint(0, 2 * padding + 1, (len(batch), 2)).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def random_hflip(batch: torch.Tensor) -> torch.Tensor:
    """Mirror each image of a (B, C, H, W) batch left-right with probability 1/2."""
    flip = torch.rand(len(batch)) < 0.5
    out = batch.clone()
    out[flip] = batch[flip].flip(-1)
    return out


class CropFlip:
    """Per-item train augmentation of an already normalised ``(C, H, W)`` tensor (e.g. an Avalanche train
    transform): :func:`random_crop` padded with the dataset's black level (the value a 0 pixel normalises to,
    ``−mean/std``), then :func:`random_hflip` if ``hflip``. Same draws from torch's global generator as the
    batch functions on a batch of one."""

    def __init__(self, padding: int, hflip: bool, mean: Sequence[float], std: Sequence[float]) -> None:
        self.padding, self.hflip = padding, hflip
        self.fill = -torch.tensor(mean) / torch.tensor(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = random_crop(x.unsqueeze(0), self.padding, self.fill)[0]
        if self.hflip:
            x = random_hflip(x.unsqueeze(0))[0]
        return x


class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor; items are (normalised float image, int label).

    Attributes: ``images`` (N, C, H, W) uint8, ``targets`` (N,) int64, ``classes`` (names),
    ``info`` (the registry's DatasetInfo).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | Sequence[int],
        info: DatasetInfo,
        classes: Sequence[str],
        *,
        max_value: float = 255.0,
        crop_padding: int = 0,
        hflip: bool = False,
    ) -> None:
        targets = torch.as_tensor(targets, dtype=torch.long)
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(targets):
            raise ValueError(f"need uint8 (N, C, H, W) images and N targets, got {images.shape} and {targets.shape}")
        self.images = images
        self.targets = targets
        self.info = info
        self.classes = list(classes)
        self.max_value = max_value
        self.crop_padding = crop_padding
        self.hflip = hflip
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)

    @property
    def augments(self) -> bool:
        """Whether items are randomly augmented."""
        return self.crop_padding > 0 or self.hflip

    def __len__(self) -> int:
        return len(self.targets)

    def _convert(self, batch: torch.Tensor) -> torch.Tensor:
        if self.crop_padding > 0:
            batch = random_crop(batch, self.crop_padding)
        if self.hflip:
            batch = random_hflip(batch)
        return batch.float().div_(self.max_value).sub_(self._mean).div_(self._std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = int(index)
        return self._convert(self.images[index : index + 1])[0], int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self._convert(self.images[index]).unbind(0), self.targets[index].tolist()))

    def select(self, indices: torch.Tensor | Sequence[int]) -> TensorImageDataset:
        """Return a dataset of the items at ``indices`` with the same conversion and augmentation."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return TensorImageDataset(
            self.images[index],
            self.targets[index],
            self.info,
            self.classes,
            max_value=self.max_value,
            crop_padding=self.crop_padding,
            hflip=self.hflip,
        )
