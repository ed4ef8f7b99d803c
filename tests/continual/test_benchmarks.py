"""Protocol pieces: the warm-start split, task_sizes, and the core's crop + flip on normalised items."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from continual.benchmarks import protocol, task_sizes
from workbench.data.tensor_dataset import CropFlip, random_crop, random_hflip
from workbench.errors import WorkbenchError


def test_warm_start_protocol_and_task_sizes() -> None:
    assert protocol("fmnist-b4-3").classes_per_task(10) == [4, 2, 2, 2]
    assert task_sizes(SimpleNamespace(benchmark="fmnist-b4-3", task_sizes=[])) == [4, 2, 2, 2]
    assert task_sizes(SimpleNamespace(benchmark="split-fmnist-5", task_sizes=[6, 1, 1, 1, 1])) == [6, 1, 1, 1, 1]
    with pytest.raises(WorkbenchError, match="sums to 9"):
        task_sizes(SimpleNamespace(benchmark="split-fmnist-5", task_sizes=[5, 2, 2]))


def test_crop_flip_pads_with_the_black_level_and_draws_like_the_batch_functions() -> None:
    mean, std = (0.5, 0.2), (0.25, 0.5)
    aug = CropFlip(2, True, mean, std)
    x = torch.randn(2, 5, 5)
    torch.manual_seed(3)
    out = aug(x)
    torch.manual_seed(3)
    fill = -torch.tensor(mean) / torch.tensor(std)
    want = random_hflip(random_crop(x[None], 2, fill))[0]
    assert torch.equal(out, want)
    black = (fill[:, None, None] == out) | torch.isin(out, x)  # every value is the image's or the black level
    assert bool(black.all())
    torch.manual_seed(0)
    crops = torch.stack([CropFlip(2, False, mean, std)(x) for _ in range(50)])
    assert bool((crops == fill.view(1, 2, 1, 1)).any())  # some crops show padding, at the black level
