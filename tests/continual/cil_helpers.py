"""Helpers of the continual tests (imported as ``cil_helpers``): hand-made data as an Avalanche stream and a
registered method's strategy built through the production path."""

from __future__ import annotations

import torch


class Tensors(torch.utils.data.Dataset):
    """Items ``(x[i], y[i])`` with ``.targets``: hand-made images or features as an Avalanche stream's data."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.targets = x, torch.as_tensor(y, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], int(self.targets[i])


def tensor_stream(x: torch.Tensor, y: torch.Tensor, task_classes: list[list[int]]):
    """A class-incremental stream over ``(x, y)`` (train = test) with the given classes per task."""
    from continual.benchmarks import make_stream

    order = [c for cs in task_classes for c in cs]
    data = Tensors(x, y)
    return make_stream(data, data, order, [len(cs) for cs in task_classes])


def build_cil(method: str, stream, backbone, *overrides: str):
    """The registered method's strategy around ``backbone`` through the production path (``CILContext`` →
    ``CIL_METHODS[method].build``), with the seen-class mask and the run's evaluator, on the CPU."""
    from continual.config import CILConfig
    from continual.plugins import SeenClassesPlugin
    from continual.run import make_evaluator
    from continual.strategies import build_strategy
    from workbench.config import resolve_config

    base = [f"method={method}", "epochs=1", "batch_size=8", "eval_batch_size=64", "progress=false", "device=cpu"]
    cfg = resolve_config(CILConfig, [*base, *overrides])
    seen = SeenClassesPlugin(stream.task_classes)
    strategy = build_strategy(cfg, stream, backbone, torch.device("cpu"), [seen], make_evaluator([]))
    strategy.seen_plugin = seen
    return strategy


def train_task(strategy, stream, t: int) -> None:
    """Train task ``t`` as ``continual.run`` does (fresh optimizer state)."""
    strategy.seen_plugin.task = t
    strategy.train(stream.scenario.train_stream[t], eval_streams=[], reset_optimizer_state=True)


def gaussian_images(classes: int, per_class: int, seed: int = 0, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (N, 1, side, side), y)``: one Gaussian blob per class around a random mean image."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, 1, side, side, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    return means[y] + 0.5 * torch.randn(len(y), 1, side, side, generator=g), y
