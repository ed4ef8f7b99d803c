"""The one compression pipeline: source model → compress → fine-tune → save → summary.

Every ``workbench compress`` command reads as prepare → method → report over these steps:

- **source**: the trained model to compress (``workbench.trained.load_trained``) and its data
  (:func:`load_data`: the model's own dataset, optional fine-tuning subset and held-out validation images);
  for the KD family the source is the teacher run, or nothing;
- **compress**: the method, looked up in its family's registry (``compression.pruning.FILTER_METHODS``,
  ``compression.pruning.SGLP_RULES``, ``compression.kd.KD_METHODS``);
- **fine-tune**: :func:`fine_tune`, the workbench Trainer with the command's loop keys (CE, or KD from the
  uncompressed model through ``compression.kd.kd.KDObjective``), resumable;
- **save** and **summary**: :func:`save_outputs` writes the compressed model(s) with their spec (so
  ``workbench eval model=RUN_DIR`` loads them) and the learning curve; :func:`finish` writes ``summary.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.config import opt
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.trained import TrainedModel
from workbench.trainer import Objective, Trainer, TrainerConfig, evaluate_classifier, trainer_config

PRUNED_FILE = "pruned.pt"  # the pruned model before fine-tuning, so that --resume skips the analysis


@dataclasses.dataclass
class SourceConfig:
    """Which trained model to compress, and the data keys (the dataset is always the model's own)."""

    model: str = opt("", "a `workbench train` run directory (or its checkpoints/model.pt)")
    data_root: str | None = opt(None, "dataset folder (default: the one the model was trained with)")
    subset: int | None = opt(None, "fine-tune on a fixed, class-stratified subset of N training images")
    test_subset: int | None = opt(None, "evaluate on a fixed, class-stratified subset of N test images")
    val_subset: int | None = opt(
        None,
        "hold out N class-stratified training images as a validation set (reported as val_*; never trained "
        "on, probed or scored), drawn from images the source model did not train on when it used subset=",
    )
    augment: bool = opt(True, "standard train-time augmentation while fine-tuning")


def epoch_seconds(summary: dict[str, Any]) -> float | None:
    """Seconds per training epoch of the run that trained the source model (None when unknown)."""
    total, epochs = summary.get("train_time_s"), summary.get("epochs")
    if isinstance(total, int | float) and isinstance(epochs, int) and epochs > 0:
        return float(total) / epochs
    return None


@dataclass
class Splits:
    """The data of a compression run: ``train`` (with the configured augmentation), ``plain`` (the same
    images without augmentation, for probes: CKA and gradient norms), ``test``, and ``val`` (held-out
    training images, or ``None``)."""

    train: Any
    plain: Any
    test: Any
    val: Any | None = None


def load_data(cfg: SourceConfig, spec: dict[str, Any], seed: int, trained_on: tuple[int, int] | None = None) -> Splits:
    """The run's splits. With ``cfg.val_subset`` the validation images are held out first (avoiding the
    source model's own training images ``trained_on = (subset, seed)`` where possible) and the
    fine-tuning ``subset`` is drawn from the rest."""
    from workbench.data import get_dataset, holdout_indices, stratified_indices
    from workbench.seeding import derive_seed

    data_root = cfg.data_root if cfg.data_root is not None else spec.get("data_root")
    kw = dict(data_root=data_root, seed=seed)
    test = get_dataset(spec["dataset"], "test", augment=False, subset=cfg.test_subset, **kw)
    if not cfg.val_subset:
        train = get_dataset(spec["dataset"], "train", augment=cfg.augment, subset=cfg.subset, **kw)
        plain = get_dataset(spec["dataset"], "train", augment=False, subset=cfg.subset, **kw)
        return Splits(train, plain, test)
    full = get_dataset(spec["dataset"], "train", augment=cfg.augment, **kw)
    full_plain = get_dataset(spec["dataset"], "train", augment=False, **kw)
    targets = torch.as_tensor(full.targets, dtype=torch.long)
    avoid = stratified_indices(targets, trained_on[0], trained_on[1]) if trained_on else None
    try:
        val_idx, rest = holdout_indices(targets, cfg.val_subset, derive_seed(seed, "val-split"), avoid)
    except WorkbenchError as exc:
        raise WorkbenchError(f"val_subset={cfg.val_subset}: {exc}") from None
    if cfg.subset is not None:
        if not 1 <= cfg.subset <= len(rest):
            raise WorkbenchError(
                f"subset={cfg.subset} must be between 1 and the {len(rest)} training images left beside val_subset"
            )
        rest = rest[stratified_indices(targets[rest], cfg.subset, seed)]
    return Splits(full.select(rest), full_plain.select(rest), test, full_plain.select(val_idx))


def fine_tune(
    model: nn.Module,
    cfg: TrainerConfig,
    epochs: int,
    train: Any,
    test: Any,
    device: torch.device,
    run: Run | None,
    seed: int,
    objective: Objective | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint_name: str = "last.pt",
    step_offset: int = 0,
) -> Trainer:
    """Train ``model`` for ``epochs`` with the workbench Trainer (resumes from ``run``'s checkpoint under --resume).

    A second training phase of the same run (fine-tuning after a mask schedule) passes its own
    ``checkpoint_name`` and the first phase's steps as ``step_offset``, so its curves continue.
    """
    trainer = Trainer(
        model,
        trainer_config(cfg, epochs=epochs),
        train,
        test,
        device=device,
        run=run,
        objective=objective,
        callbacks=callbacks,
        seed=seed,
        checkpoint_name=checkpoint_name,
        step_offset=step_offset,
    )
    trainer.fit(resume=run is not None and run.resumed and (run.checkpoints / checkpoint_name).is_file())
    return trainer


def accuracy(model: nn.Module, data: Any, device: torch.device, batch_size: int = 512) -> float:
    """Test accuracy (%) of ``model`` on ``data``."""
    return evaluate_classifier(model.to(device), data, device, batch_size)["acc"]


def val_accuracy(model: nn.Module, val: Any | None, device: torch.device, batch_size: int = 512) -> float | None:
    """Accuracy (%) on the held-out validation images, or ``None`` when the run has none."""
    return None if val is None else accuracy(model, val, device, batch_size)


def val_fields(val: Any | None, before: float | None, after_prune: float | None, final: float | None) -> dict:
    """The summary's validation entries (none when the run held out no validation images)."""
    if val is None:
        return {}
    return {"val_images": len(val), "val_acc_before": before, "val_acc_after_prune": after_prune, "val_acc": final}


@torch.no_grad()
def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded into it
    (``torch.fx.experimental.optimization.fuse``: ``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β`` with
    ``σ = sqrt(running_var + ε)``), as an inference runtime would; the model itself is left alone."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).cpu().eval(), inplace=True)


@torch.no_grad()
def cpu_images_per_second(
    models: dict[str, nn.Module],
    input_shape: Sequence[int],
    batch_size: int = 64,
    repeats: int = 5,
    fold_batchnorm: bool = False,
) -> dict[str, float]:
    """CPU inference throughput of each model, measured side by side in this process.

    Each model runs in eval mode on a copy on the CPU (``fold_batchnorm``: with its BatchNorms folded into the
    convolutions, :func:`fold_bn`); the repeats interleave the models (so that load from other processes hits
    them alike) after one warm-up batch each; the median images/s is reported.
    """
    x = torch.randn(batch_size, *input_shape)
    copies = fold_bn if fold_batchnorm else (lambda m: copy.deepcopy(m).cpu().eval())
    cpu = {name: copies(m) for name, m in models.items()}
    for m in cpu.values():
        m(x)
    times: dict[str, list[float]] = {name: [] for name in cpu}
    for _ in range(max(1, repeats)):
        for name, m in cpu.items():
            start = time.perf_counter()
            m(x)
            times[name].append(time.perf_counter() - start)
    return {name: batch_size / statistics.median(ts) for name, ts in times.items()}


def base_spec(source: TrainedModel, **extra: Any) -> dict[str, Any]:
    """The source model's spec with ``extra`` keys (e.g. ``removed_units``, ``compressed_by``)."""
    spec = {k: v for k, v in source.spec.items()}
    spec.update(extra)
    return spec


def save_outputs(
    run: Run, models: dict[str, nn.Module], spec: dict[str, Any], history: list[dict], curve: str, title: str
) -> None:
    """Save each compressed model as ``checkpoints/<file>`` with ``spec`` (``workbench.models.saved.save_model``)
    and, when there was training, its learning curve as ``plots/<curve>``; only the main process writes."""
    from workbench.models.saved import save_model

    if not run.is_main:
        return
    for file, model in models.items():
        save_model(run.checkpoints / file, model, spec)
    if history:
        from workbench.plots import plot_history

        plot_history(history, run.plots / curve, title=title)


def finish(run: Run, summary: dict[str, Any], message: str) -> dict[str, Any]:
    """Write the run's ``summary.json``, print the one-line result, return the summary."""
    run.write_summary(summary)
    print(message)
    return summary
