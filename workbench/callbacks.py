"""Trainer callbacks: the hook points the one supervised loop offers.

A callback adds extra loss terms, applies mask schedules, or logs. Every hook is optional.
Callbacks that hold state implement ``state_dict``/``load_state_dict`` so that ``--resume``
continues them exactly; the trainer stores them in its checkpoint by position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from workbench.trainer import Trainer


class Callback:
    """Base class. Hooks run on every rank unless they check ``trainer.is_main``."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """At the start of epoch ``epoch`` (0-based)."""

    def extra_loss(self, trainer: Trainer, batch: Any, output: Any) -> dict[str, torch.Tensor]:
        """Extra loss terms for this batch, added to the objective's loss and logged by name."""
        return {}

    def on_after_backward(self, trainer: Trainer) -> None:
        """After backward (gradients unscaled), before clipping and the optimizer step."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After the optimizer step; ``step`` is the global optimizer step (1-based)."""

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After the epoch's last step, before its evaluation (apply masks here so the test sees them)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After the epoch and its evaluation. Add scalars to ``logs`` to have them logged."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state
