"""Take intermediate outputs of a model by module path, with forward hooks (no model rewriting).

    with FeatureHooks(model, ["layer1", "flatten"]) as feats:
        logits = model(x)
        loss = mse(feats["flatten"], target)   # gradients flow through the stored outputs

Paths are those of ``model.named_modules()`` (``"layer2"``, ``"layer2.3"``, ``"layer2.3.shortcut"``;
``""`` is the model itself). Wrappers are looked through: for a ``DistributedDataParallel`` /
``DataParallel`` model (``.module``) or a ``torch.compile``d one (``._orig_mod``) give the path
relative to the underlying model, i.e. ``"layer1"`` and not ``"module.layer1"``.

With ``torch.compile``: TorchDynamo does not guard on hooks (``skip_nnmodule_hook_guards``), so
hooks added after a graph was compiled are not seen by it. Enter ``FeatureHooks`` before the first
compiled forward and keep it open while the compiled model is used.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from workbench.errors import WorkbenchError


class FeatureModel(nn.Module):
    """Base of the zoo's models: the module paths that feature code relies on.

    Subclasses set ``stage_names`` and define modules ``flatten`` (pooled, flattened embedding)
    and ``fc`` (the final ``nn.Linear``).
    """

    stage_names: tuple[str, ...] = ()
    feature_path = "flatten"
    head_path = "fc"

    @property
    def feature_dim(self) -> int:
        """Embedding width, read from the head so that it stays right after channel pruning."""
        return get_module(self, self.head_path).in_features


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # torch._dynamo's OptimizedModule
        else:
            return model


@contextlib.contextmanager
def preserve_modes(model: nn.Module, train: bool | None = None) -> Iterator[nn.Module]:
    """Set the whole model to train (``True``) or eval (``False``) mode, restoring every submodule's own
    mode afterwards (frozen BatchNorm layers or a frozen teacher inside stay as they were)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        if train is not None:
            model.train(train)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers still normalise with batch statistics in train mode but leave their running
    statistics unchanged (momentum 0) inside the block; for extra forwards (sub-networks, augmented views)
    whose activation statistics must not leak into the ones the model is evaluated with."""
    saved = [(m, m.momentum) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _ in saved:
            m.momentum = 0.0
        yield model
    finally:
        for m, momentum in saved:
            m.momentum = momentum


@contextlib.contextmanager
def recalibrated_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> Iterator[nn.Module]:
    """Inside the block, every BatchNorm's running statistics are re-estimated as the exact average over
    forwards of ``batches`` (input tensors on the model's device) in train mode, without gradients;
    the original statistics and momenta come back afterwards. "Post-statistics" BN calibration of
    weight-sharing sub-networks (Yu & Huang, US-Nets, arXiv 1903.05134)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: equal weight for every batch
        with torch.no_grad(), preserve_modes(model, train=True):
            for x in batches:
                model(x)
        yield model
    finally:
        for m, momentum, buffers in saved:
            m.momentum = momentum
            for k, b in buffers.items():
                getattr(m, k).copy_(b)


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (relative to the unwrapped model; ``""`` is the model itself)."""
    root = unwrap(model)
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        preferred = [*getattr(root, "stage_names", ()), getattr(root, "feature_path", None)]
        shown = [n for n in preferred if n in names] or names[:8]
        raise WorkbenchError(
            f"{type(root).__name__} has no module '{path}'; {hint}valid paths include "
            f"{', '.join(shown)} (all: dict(model.named_modules()))"
        ) from None


class FeatureHooks(Mapping[str, Any]):
    """Context manager recording the outputs of the modules at ``paths`` on every forward.

    Inside the ``with`` block it is a read-only mapping path -> output of the latest forward of
    the model (outputs of the previous forward are dropped when the model's forward starts).
    Outputs keep their autograd graph unless ``detach=True``. A module called several times in one
    forward keeps its last output. Hooks are registered on entry and removed on exit.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], detach: bool = False) -> None:
        self.root = unwrap(model)
        self.paths = tuple(dict.fromkeys(paths))
        self.modules = {p: get_module(self.root, p) for p in self.paths}
        self.detach = detach
        self._outputs: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []

    def _reset(self, module: nn.Module, args: Any) -> None:
        self._outputs.clear()

    def _saver(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.detach and isinstance(output, torch.Tensor):
                output = output.detach()
            self._outputs[path] = output

        return hook

    def __enter__(self) -> FeatureHooks:
        if self._handles:
            raise WorkbenchError("FeatureHooks is already active; use a new FeatureHooks for nested blocks")
        self._outputs.clear()
        self._handles.append(self.root.register_forward_pre_hook(self._reset))
        for path, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._saver(path)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __getitem__(self, path: str) -> Any:
        if path not in self._outputs:
            if path not in self.modules:
                raise KeyError(f"'{path}' is not hooked; hooked paths: {', '.join(self.paths)}")
            raise KeyError(f"no output recorded for '{path}': run the model inside the `with` block first")
        return self._outputs[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


def features(model: nn.Module, x: torch.Tensor, paths: Iterable[str]) -> dict[str, Any]:
    """Run ``model(x)`` once and return ``{path: output}`` for ``paths`` (logits at path ``""``)."""
    with FeatureHooks(model, paths) as feats:
        model(x)
        return dict(feats)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad`` off: the frozen teacher / "old model" of a distillation term."""
    import copy

    old = copy.deepcopy(model).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    return old
