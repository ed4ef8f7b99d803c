"""The Avalanche template the workbench's CIL strategies (eTag, IR) build on.

A :class:`SupervisedTemplate` whose optimizer is rebuilt at the start of every task over the model's
trainable parameters (fresh state: what most CIL code does, and what lets a run resume exactly at a task
boundary; Avalanche's baselines get the same through ``reset_optimizer_state=True``), with optional frozen
BatchNorm statistics after task 0, named loss terms for logging, and a small state-dict protocol for the
per-task checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from continual.plugins import classes_before, set_bn_eval

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class WorkbenchTemplate(SupervisedTemplate):
    """Base of eTag and IR: per-task optimizer, optional frozen BN after task 0, ``loss_terms`` for logging.

    ``task_classes[t]`` lists the classes of task ``t``; :meth:`old_units` is eTag's k.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer_factory: OptimizerFactory,
        task_classes: Sequence[Sequence[int]],
        num_classes: int,
        freeze_bn: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, optimizer=optimizer_factory(model.parameters()), **kwargs)
        self.optimizer_factory = optimizer_factory
        self.task_classes = [list(c) for c in task_classes]
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        self.loss_terms: dict[str, torch.Tensor] = {}

    @property
    def task(self) -> int:
        """Index of the experience being trained (or last trained)."""
        return 0 if self.experience is None else int(self.experience.current_experience)

    def old_units(self, task: int | None = None) -> float:
        """k: classes seen before ``task`` ÷ classes per incremental task (0 for task 0)."""
        task = self.task if task is None else task
        seen = sum(len(c) for c in self.task_classes[:task])
        return seen / len(self.task_classes[-1])

    def old_classes(self, task: int | None = None) -> list[int]:
        return classes_before(self.task_classes, self.task if task is None else task)

    def seen_classes(self, task: int | None = None) -> list[int]:
        """Classes of tasks ``0..task`` (the softmax's support while training ``task``)."""
        return classes_before(self.task_classes, (self.task if task is None else task) + 1)

    def make_optimizer(self, **kwargs: Any) -> None:
        self.optimizer = self.optimizer_factory(p for p in self.model.parameters() if p.requires_grad)

    def check_model_and_optimizer(self, **kwargs: Any) -> None:
        self.model = self.model_adaptation()
        self.make_optimizer()

    def _before_training_epoch(self, **kwargs: Any) -> None:
        if self.freeze_bn and self.task > 0:
            set_bn_eval(self.model)
        super()._before_training_epoch(**kwargs)

    def train_features(self, model: nn.Module, embed: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
        """Embeddings ``(N, D)`` and labels ``(N,)`` of the current task's unaugmented training images."""
        data = self.experience.dataset.eval()
        loader = torch.utils.data.DataLoader(data, batch_size=self.eval_mb_size, shuffle=False)
        was_training = model.training
        model.eval()
        feats, labels = [], []
        with torch.no_grad():
            for batch in loader:
                feats.append(embed(batch[0].to(self.device)))
                labels.append(batch[1].to(self.device))
        model.train(was_training)
        return torch.cat(feats), torch.cat(labels)

    def state(self) -> dict[str, Any]:
        """What the per-task checkpoint keeps (tensors, numbers, lists, dicts only)."""
        return {"model": self.model.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
