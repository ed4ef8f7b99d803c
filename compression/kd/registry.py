"""The KD-method registry and the interface every KD method implements.

A method is a :class:`KDMethod` registered once, in its own module, with ``KD_METHODS.register(name, entry)``
(and that module named in ``modules`` below). It declares:

- ``section`` and ``weights``: the config section (``workbench compress kd <section>.KEY=V``) and its
  dataclass, whose field defaults are the method's defaults (the objective's keyword defaults read them);
- ``needs_teacher`` / ``cohort``: whether it distils from a ``workbench train`` run, trains a cohort;
- ``build``: the network(s) the Trainer trains, the objective and the callbacks. What a method
  checkpoints is what these hold: the Trainer saves the model, the objective's state (its own trainable
  parts, moving averages, counters) and every stateful callback, so a run resumes exactly;
- ``report``: the accuracy and cost entries of the summary, and ``files``: the model files it saves.

``workbench compress kd``'s config, ``--help``, the compare's default methods and the registry-wide tests
loop over ``KD_METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.registry import Registry

KD_METHODS: Registry[Any] = Registry(
    "KD method",
    modules=[
        "compression.kd.kd",
        "compression.kd.hsakd",
        "compression.kd.mixskd",
        "compression.kd.mcl",
        "compression.kd.ctsl_mkt",
        "compression.kd.ddnn_ekd",
        "compression.kd.dkd",
        "compression.kd.dist",
    ],
)


@dataclass
class KDContext:
    """What a method builds from: the config, the data (``info``: classes, channels, image size), the
    device, the frozen teacher and its spec (methods with ``needs_teacher``), and the summary so far."""

    cfg: Any
    train: Any
    test: Any
    device: torch.device
    teacher: nn.Module | None = None
    teacher_spec: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> Any:
        return self.train.info

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.info.in_channels, *self.info.image_size)

    @property
    def weights(self) -> Any:
        """The method's config section."""
        entry = KD_METHODS[self.cfg.method]
        return getattr(self.cfg, entry.section) if entry.section else None


@dataclass
class Built:
    """A method's training setup: the module the Trainer trains, its objective, its callbacks."""

    model: nn.Module
    objective: Any
    callbacks: list[Any] = field(default_factory=list)


class KDMethod:
    """One KD method (module docstring). Subclasses set the class attributes and implement ``build``."""

    section: ClassVar[str | None] = None
    weights: ClassVar[type | None] = None
    needs_teacher: ClassVar[bool] = False
    cohort: ClassVar[bool] = False
    # key=value settings a tiny smoke run of the method needs beyond a small CNN on digits (the registry-wide
    # tests and the compares read them), e.g. a residual student
    tiny_overrides: ClassVar[tuple[str, ...]] = ()

    def validate(self, cfg: Any) -> None:
        """Refuse a config the method cannot run (one-line ``WorkbenchError``), before anything is written."""

    def build(self, ctx: KDContext) -> Built:
        raise NotImplementedError

    def report(self, ctx: KDContext, built: Built, trainer: Any, logs: dict[str, float]) -> dict[str, Any]:
        """``student_acc``, ``macs``, ``params`` and any method-specific entries of the summary."""
        from workbench.flops import model_cost

        cost = model_cost(built.model, ctx.input_shape)
        return {"student_acc": logs.get("test/acc"), "macs": cost["macs"], "params": cost["params"]}

    def files(self, built: Built) -> dict[str, nn.Module]:
        """The networks to save, by file name under ``checkpoints/``."""
        return {"model.pt": built.model}


def build_student(cfg: Any, info: Any, key: str = "student") -> nn.Module:
    """The student network, initialised from a seed derived from ``(cfg.seed, key)``."""
    from workbench.models import build_model
    from workbench.seeding import derive_seed, seed_everything

    seed_everything(derive_seed(cfg.seed, "model-init", key))
    kwargs = {"widths": list(cfg.student_widths)} if cfg.student_widths else {}
    return build_model(cfg.student, num_classes=info.num_classes, in_channels=info.in_channels, **kwargs)


def new_student(ctx: KDContext) -> nn.Module:
    """The student (seeded by ``"student"``), then the objective's seed (its own parameters come next)."""
    from workbench.seeding import derive_seed, seed_everything

    model = build_student(ctx.cfg, ctx.info)
    seed_everything(derive_seed(ctx.cfg.seed, "objective-init"))
    return model


def new_cohort(ctx: KDContext) -> Any:
    """``cfg.cohort`` students (seeded ``member0``, ``member1``, ...) as one ``Cohort``, then the objective's seed."""
    from compression.kd.cohort import Cohort
    from workbench.seeding import derive_seed, seed_everything

    model = Cohort([build_student(ctx.cfg, ctx.info, f"member{i}") for i in range(ctx.cfg.cohort)])
    seed_everything(derive_seed(ctx.cfg.seed, "objective-init"))
    return model
