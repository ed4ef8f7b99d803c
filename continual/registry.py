"""The CIL-method registry and the interface every class-incremental method implements.

A method is a :class:`CILMethod` registered once, in its own module, with ``CIL_METHODS.register(name, entry)``
(and that module named in ``modules`` below). It declares:

- ``section`` and ``keys``: its config section (``workbench cil run <section>.KEY=V``) and the dataclass
  whose field defaults are the method's defaults (written once, beside its code; methods may share one);
- ``retrains`` (joint training: a fresh model on tasks ``0..t`` for row ``t``) and ``min_first_task``
  (classes the first task needs, e.g. 2 for a covariance per class and a trained backbone);
- ``build``: the Avalanche strategy around the seeded backbone (:class:`CILContext` holds what it builds from);
- ``state`` / ``load_state``: what the per-task checkpoint keeps (tensors, numbers, lists, dicts only);
- ``tiny_overrides``: ``key=value`` settings a tiny smoke run needs (the registry-wide tests read them).

``workbench cil run|compare``'s config (choices, sections, ``--help``), the compare's default methods and the
registry-wide tests (``tests/continual/test_run.py``) loop over ``CIL_METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from workbench.registry import Registry

CIL_METHODS: Registry[Any] = Registry(
    "CIL method",
    modules=[
        "continual.baselines",
        "continual.etag",
        "continual.ir",
        "continual.ncm",
        "continual.fecam",
        "continual.fetril",
        "continual.acil",
        "continual.ldc",
    ],
)


@dataclass
class CILContext:
    """What a strategy is built from: the config, the stream, the seeded backbone, the device, the plugins every
    method gets (schedule/logging and the seen-class mask) and the evaluator."""

    cfg: Any
    stream: Any
    backbone: Any
    device: Any
    plugins: list = field(default_factory=list)
    evaluator: Any = None

    @property
    def keys(self) -> Any:
        """The method's config section (``None`` for a method without one)."""
        entry = CIL_METHODS[self.cfg.method]
        return getattr(self.cfg, entry.section) if entry.section else None

    def optimizer_factory(self) -> Any:
        """``params → optimizer`` of the run's optimizer keys (``workbench.optim``)."""
        from workbench.optim import optimizer_factory

        c = self.cfg
        return optimizer_factory(c.optimizer, c.lr, c.weight_decay, c.momentum)

    def common(self) -> dict[str, Any]:
        """The keyword arguments every Avalanche strategy gets alike."""
        c = self.cfg
        return dict(
            train_mb_size=c.batch_size,
            train_epochs=c.epochs,
            eval_mb_size=c.eval_batch_size,
            device=self.device,
            plugins=list(self.plugins),
            evaluator=self.evaluator,
            eval_every=-1,
        )

    def template_kwargs(self) -> dict[str, Any]:
        """:class:`~continual.template.WorkbenchTemplate`'s arguments: the common ones, the optimizer factory and
        the class split."""
        return dict(
            optimizer_factory=self.optimizer_factory(),
            task_classes=self.stream.task_classes,
            num_classes=self.stream.num_classes,
            **self.common(),
        )


class CILMethod:
    """One class-incremental method (module docstring). Subclasses set the attributes and implement ``build``."""

    section: ClassVar[str | None] = None
    keys: ClassVar[type | None] = None
    retrains: ClassVar[bool] = False
    min_first_task: ClassVar[int] = 1
    paper: ClassVar[str] = ""
    tiny_overrides: ClassVar[tuple[str, ...]] = ()

    def validate(self, cfg: Any) -> None:
        """Refuse a config the method cannot run (one-line ``WorkbenchError``), before anything is written."""

    def build(self, ctx: CILContext) -> Any:
        raise NotImplementedError

    def state(self, strategy: Any) -> dict[str, Any]:
        """What the strategy carries to the next task (default: the template's ``state()`` or the model)."""
        from continual.template import WorkbenchTemplate

        if isinstance(strategy, WorkbenchTemplate):
            return strategy.state()
        return {"model": strategy.model.state_dict()}

    def load_state(self, strategy: Any, state: dict[str, Any]) -> None:
        """Restore :meth:`state` into a freshly built strategy of the same config."""
        from continual.template import WorkbenchTemplate

        if isinstance(strategy, WorkbenchTemplate):
            strategy.load_state(state)
        else:
            strategy.model.load_state_dict(state["model"])
