"""``workbench train``: supervised training of any registered model on any registered dataset."""

from __future__ import annotations

import dataclasses
import time

from workbench.config import CommonConfig, opt
from workbench.data.config import DataConfig, load_splits
from workbench.device import choose_device
from workbench.models.saved import save_model
from workbench.runs import Run
from workbench.trainer import Trainer, TrainerConfig


@dataclasses.dataclass
class TrainCommandConfig(TrainerConfig, DataConfig, CommonConfig):
    """``workbench train`` keys."""

    model: str = opt("resnet20", "model name (resnet20/32/44/56/110, resnet8x4, resnet32x4, wrn_16_2, ...)")

    def validate(self) -> None:
        from workbench.data import DATASETS
        from workbench.errors import unknown
        from workbench.models import MODELS

        if self.dataset not in DATASETS:
            raise unknown("dataset", self.dataset, DATASETS)
        if self.model not in MODELS:
            raise unknown("model", self.model, MODELS)
        self.validate_trainer()


def model_spec(cfg: TrainCommandConfig, info) -> dict:
    """What :func:`workbench.models.saved.load_model` needs to rebuild the model and find its test data."""
    return {
        "name": cfg.model,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "input_shape": [info.in_channels, *info.image_size],
        "dataset": cfg.dataset,
        "data_root": cfg.data_root,
    }


def run(cfg: TrainCommandConfig, run: Run) -> dict:
    from workbench.flops import model_cost
    from workbench.models import build_model
    from workbench.plots import plot_history

    device = choose_device(cfg.device)
    train, test = load_splits(cfg, cfg.seed)
    info = train.info
    from workbench.seeding import derive_seed, seed_everything

    seed_everything(derive_seed(cfg.seed, "model-init"))
    model = build_model(cfg.model, num_classes=info.num_classes, in_channels=info.in_channels)
    trainer = Trainer(model, cfg, train, test, device=device, run=run, seed=cfg.seed)
    start = time.perf_counter()
    logs = trainer.fit(resume=run.resumed)
    wall = time.perf_counter() - start
    spec = model_spec(cfg, info)
    cost = model_cost(model, tuple(spec["input_shape"]))
    summary = {
        "command": "train",
        "dataset": cfg.dataset,
        "model": cfg.model,
        "seed": cfg.seed,
        "epochs": trainer.epoch,
        "test_acc": logs.get("test/acc"),
        "best_test_acc": max((h.get("test/acc", 0.0) for h in trainer.history), default=None),
        "train_loss": logs.get("train/loss"),
        "macs": cost["macs"],
        "params": cost["params"],
        "images_per_s": logs.get("throughput/images_per_s"),
        "wall_time_s": round(wall, 2),
        "train_time_s": round(sum(h.get("time/epoch_s", 0.0) for h in trainer.history), 2),
        "device": str(trainer.device),
        "precision": cfg.precision,
        **trainer.comm_summary(),
    }
    if run.is_main:
        save_model(run.checkpoints / "model.pt", model, spec)
        plot_history(trainer.history, run.plots / "learning_curve.png", title=f"{cfg.model} on {cfg.dataset}")
        run.write_summary(summary)
        print(f"test accuracy {summary['test_acc']:.2f}% after {trainer.epoch} epochs ({wall:.0f} s)")
    return summary
