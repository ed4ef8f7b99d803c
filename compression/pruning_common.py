"""What SGLP and the filter-pruning commands share: the trained model to start from, its data, the
fine-tuning loop (CE or KD from the unpruned model), and CPU inference speed measured side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.config import opt
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.trainer import Objective, ObjectiveOutput, Trainer, TrainerConfig, evaluate_classifier

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


def model_path(model: str | Path) -> Path:
    """The ``model.pt`` of a train run directory, or the file itself; one-line errors otherwise."""
    if not str(model):
        raise WorkbenchError("missing 'model': pass model=RUN_DIR (a `workbench train` run directory)")
    path = Path(model)
    if not path.exists():
        raise WorkbenchError(f"model {path} does not exist; pass the run directory that `workbench train` printed")
    if path.is_dir():
        candidate = path / "checkpoints" / "model.pt"
        if not candidate.is_file():
            raise WorkbenchError(
                f"{path} is not a finished train run (no checkpoints/model.pt); pass a `workbench train` run directory"
            )
        return candidate
    return path


@dataclass
class Source:
    """A loaded trained model with its spec, and the summary of the run that made it (if any)."""

    model: nn.Module
    spec: dict[str, Any]
    path: Path
    run_summary: dict[str, Any]

    train_config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.spec["input_shape"])

    @property
    def trained_on(self) -> tuple[int, int] | None:
        """``(subset, seed)`` of the training images the source run used, when it used a subset."""
        subset = self.train_config.get("subset")
        return (int(subset), int(self.train_config.get("seed", 0))) if subset else None


def load_source(model: str | Path) -> Source:
    """Load the model to compress (a train run directory or a model file written by ``save_model``)."""
    import json

    from omegaconf import OmegaConf

    from workbench.checkpoint import load_model

    path = model_path(model)
    net, spec = load_model(path)
    summary_path = path.parent.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config_path = path.parent.parent / "config.yaml"
    train_config: dict[str, Any] = {}
    if config_path.is_file() and summary.get("command") == "train":
        loaded = OmegaConf.to_container(OmegaConf.load(config_path))
        train_config = loaded if isinstance(loaded, dict) else {}
    return Source(net, spec, path, summary, train_config)


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


class DistillRecovery(Objective):
    """Fine-tuning objective ``γ·CE + α·T²·KL(p_teacher ‖ p_student)`` with the frozen unpruned model as teacher.

    Hinton et al. (arXiv 1503.02531) through ``workbench.distill.hinton_objective``. The teacher always
    runs in eval mode (its BatchNorm statistics never move) and without gradients.
    """

    def __init__(self, teacher: nn.Module, T: float, gamma: float, alpha: float) -> None:
        super().__init__()
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.T, self.gamma, self.alpha = T, gamma, alpha

    def train(self, mode: bool = True) -> DistillRecovery:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        from workbench.distill import hinton_objective

        logits = model(inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        loss, terms = hinton_objective(logits, teacher_logits, targets, self.T, self.gamma, self.alpha)
        return ObjectiveOutput(loss, logits, terms)


def trainer_config(cfg: TrainerConfig, epochs: int) -> TrainerConfig:
    """A plain ``TrainerConfig`` with ``cfg``'s loop keys and ``epochs`` epochs."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainerConfig)}
    values["epochs"] = epochs
    return TrainerConfig(**values)


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
        trainer_config(cfg, epochs),
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
def cpu_images_per_second(
    models: dict[str, nn.Module], input_shape: Sequence[int], batch_size: int = 64, repeats: int = 5
) -> dict[str, float]:
    """CPU inference throughput of each model, measured side by side in this process.

    Each model runs in eval mode on a copy on the CPU; the repeats interleave the models (so that load
    from other processes hits them alike) after one warm-up batch each; the median images/s is reported.
    """
    x = torch.randn(batch_size, *input_shape)
    cpu = {name: copy.deepcopy(m).cpu().eval() for name, m in models.items()}
    for m in cpu.values():
        m(x)
    times: dict[str, list[float]] = {name: [] for name in cpu}
    for _ in range(max(1, repeats)):
        for name, m in cpu.items():
            start = time.perf_counter()
            m(x)
            times[name].append(time.perf_counter() - start)
    return {name: batch_size / statistics.median(ts) for name, ts in times.items()}


def base_spec(source: Source, **extra: Any) -> dict[str, Any]:
    """The source model's spec with ``extra`` keys (e.g. ``removed_units``, ``compressed_by``)."""
    spec = {k: v for k, v in source.spec.items()}
    spec.update(extra)
    return spec
