"""Image-file datasets read through PIL: Tiny-ImageNet and an ImageNet subset in ImageFolder layout.

Layouts under the data root:

- ``tiny-imagenet-200/``: ``wnids.txt`` (one WordNet id a line), ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` and ``val/val_annotations.txt`` (tab-separated: file, wnid, bbox...).
  The test split is the val split (the official test labels are not public).
- ``imagenet-subset/``: ``train/<class>/*`` and ``val/<class>/*`` (JPEG, PNG, any ImageFolder
  extension); the test split is ``val``. Class indices follow the sorted train folder names.

Class indices are the sorted class names (torchvision's ImageFolder convention); ``info.num_classes``
of the returned dataset is the number of classes found on disk.

Transforms (torchvision.transforms.v2): train with augmentation ``RandomResizedCrop(size)`` (scale
0.08..1, ratio 3/4..4/3) and a horizontal flip with p = 1/2; otherwise ``Resize(r)`` of the short
side and ``CenterCrop(size)`` (r = 256 for size 224, r = size for Tiny-ImageNet's native 64x64).
Then x = (img / 255 - mean) / std.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, find_classes, has_file_allowed_extension
from torchvision.datasets.folder import make_dataset as folder_samples
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.transforms import v2

from workbench.data.roots import not_found
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.data.registry import DatasetInfo

TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
SUBSET_FOLDER = "imagenet-subset"
EVAL_RESIZE = {"tiny-imagenet": 64, "imagenet-subset": 256}


class ImageFileDataset(Dataset):
    """(path, label) samples decoded by PIL (as RGB) and passed through ``transform``.

    Attributes: ``samples``, ``targets`` (N,) int64, ``classes``, ``info``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        info: DatasetInfo,
        transform: Callable[..., torch.Tensor],
    ) -> None:
        self.samples = list(samples)
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.classes = list(classes)
        self.info = info
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[int(index)]
        return self.transform(default_loader(path)), label

    def select(self, indices: torch.Tensor | Sequence[int]) -> ImageFileDataset:
        """Return a dataset of the samples at ``indices`` with the same transform."""
        return ImageFileDataset([self.samples[int(i)] for i in indices], self.classes, self.info, self.transform)


def image_transform(info: DatasetInfo, augment: bool) -> v2.Compose:
    """The PIL-image-to-normalised-tensor pipeline described in the module docstring."""
    size = list(info.image_size)
    if augment:
        geometry = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(EVAL_RESIZE[info.name], antialias=True), v2.CenterCrop(size)]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(info.mean), list(info.std)),
        ]
    )


def _tiny_prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    folder = root / TINY_FOLDER
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "images", folder / "val" / "val_annotations.txt"]
    if all(p.exists() for p in needed):
        return folder
    if download:
        download_and_extract_archive(TINY_URL, str(root), md5=TINY_MD5)
        return folder
    expected = f"{TINY_FOLDER}/ with wnids.txt, train/<wnid>/images/, val/images/, val/val_annotations.txt"
    raise not_found(info.name, root, expected, info.how_to_get, True)


def _tiny_samples(folder: Path, train: bool, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    if train:
        return folder_samples(str(folder / "train"), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    samples = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and has_file_allowed_extension(fields[0], IMG_EXTENSIONS):
            if fields[1] not in class_to_idx:
                raise WorkbenchError(
                    f"dataset 'tiny-imagenet': {folder}/val/val_annotations.txt names class {fields[1]!r}, "
                    "which is not in wnids.txt; the copy is damaged: provide it again"
                )
            samples.append((str(folder / "val" / "images" / fields[0]), class_to_idx[fields[1]]))
    return samples


def _subset_prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    folder = root / SUBSET_FOLDER
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        return folder
    raise not_found(
        info.name, root, f"{SUBSET_FOLDER}/train/<class>/ and val/<class>/ image folders", info.how_to_get, False
    )


def prepare(info: DatasetInfo, root: Path, download: bool) -> Path:
    """Check the folder tree is in place (Tiny-ImageNet can be downloaded); return the dataset folder."""
    return (_tiny_prepare if info.name == "tiny-imagenet" else _subset_prepare)(info, root, download)


def load(info: DatasetInfo, root: Path, train: bool, augment: bool, download: bool) -> ImageFileDataset:
    """List the split's image files and labels; images are decoded on access."""
    folder = prepare(info, root, download)
    if info.name == "tiny-imagenet":
        classes = sorted(set((folder / "wnids.txt").read_text().split()))
        class_to_idx = {c: i for i, c in enumerate(classes)}
        samples = _tiny_samples(folder, train, class_to_idx)
    else:
        try:
            classes, class_to_idx = find_classes(str(folder / "train"))
        except FileNotFoundError as err:
            raise WorkbenchError(f"dataset '{info.name}': {err} (expected one folder per class)") from err
        split_dir = folder / ("train" if train else "val")
        samples = folder_samples(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise WorkbenchError(
            f"dataset '{info.name}': no {'train' if train else 'test'} images under {folder} "
            f"(extensions {', '.join(IMG_EXTENSIONS)})"
        )
    info = dataclasses.replace(info, num_classes=len(classes))
    return ImageFileDataset(samples, classes, info, image_transform(info, augment))
