"""The Avalanche plugins that tie every strategy (Avalanche's and the workbench's) to the workbench core.

- :class:`WorkbenchPlugin` applies the per-task learning-rate schedule of ``workbench.optim.lr_factor`` over
  epochs, shows a tqdm bar, and logs the training loss (and a strategy's named ``loss_terms``) through the
  run's :class:`~workbench.tracking.RunLogger` at the global iteration.
- :class:`SeenClassesPlugin` evaluates every method on the class-incremental protocol: a prediction is an
  argmax over the classes seen so far (a head sized for all classes must not answer with a future class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import nn
from tqdm.auto import tqdm

from workbench.optim import lr_factor


def set_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: running statistics stay frozen, affine weights still train."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


UNSEEN = -1e4
"""Score given to classes that cannot be predicted (below any real logit or similarity)."""


def mask_unseen(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """``logits`` (N, C) with every column not in ``classes`` set to :data:`UNSEEN` (a new tensor)."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(list(classes), dtype=torch.long, device=logits.device)] = True
    return logits.masked_fill(~keep, UNSEEN)


def classes_before(task_classes: Sequence[Sequence[int]], task: int) -> list[int]:
    """The classes of tasks ``0..task−1``, in task order."""
    return [c for cs in task_classes[:task] for c in cs]


class SeenClassesPlugin(SupervisedPlugin):
    """Masks the eval output to the classes of tasks ``0..task`` (``task`` is set by the driver per task)."""

    def __init__(self, task_classes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.task_classes = [list(c) for c in task_classes]
        self.task = 0

    def seen(self) -> list[int]:
        return classes_before(self.task_classes, self.task + 1)

    def after_eval_forward(self, strategy: Any, **kwargs: Any) -> None:
        strategy.mb_output = mask_unseen(strategy.mb_output, self.seen())


class WorkbenchPlugin(SupervisedPlugin):
    """Learning-rate schedule, progress bar and scalar logging for one run (the driver seeds every task).

    ``task`` is set by the driver before each ``strategy.train`` call; ``logger`` is a RunLogger or None.
    """

    def __init__(
        self,
        lr: float,
        epochs: int,
        schedule: str = "none",
        milestones: tuple[int, ...] = (),
        step_size: int = 30,
        gamma: float = 0.1,
        logger: Any = None,
        log_every: int = 20,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.lr, self.epochs = lr, epochs
        self.schedule, self.milestones, self.step_size, self.gamma = schedule, tuple(milestones), step_size, gamma
        self.logger, self.log_every, self.progress = logger, log_every, progress
        self.task = 0
        self.iteration_offset = 0
        self._bar = None

    def step(self, strategy: Any) -> int:
        """Global iteration of the run (across tasks, and across the fresh strategies of joint training)."""
        return self.iteration_offset + strategy.clock.train_iterations

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if self.progress:
            total = self.epochs * len(strategy.dataloader)
            self._bar = tqdm(total=total, desc=f"task {self.task}", leave=False, dynamic_ncols=True)

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        factor = lr_factor(
            strategy.clock.train_exp_epochs,
            1,
            self.epochs,
            self.schedule,
            milestones=self.milestones,
            step_size=self.step_size,
            gamma=self.gamma,
        )
        for group in strategy.optimizer.param_groups:
            group["lr"] = self.lr * factor

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)
        if self.logger is not None and strategy.clock.train_exp_iterations % self.log_every == 0:
            values = {"train/loss": float(strategy.loss.detach())}
            for name, value in getattr(strategy, "loss_terms", {}).items():
                values[f"train/{name}"] = float(value)
            values["train/lr"] = strategy.optimizer.param_groups[0]["lr"]
            self.logger.scalars(values, self.step(strategy))

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
