"""``workbench eval model=RUN_DIR``: test accuracy of a saved model (trained, pruned or distilled)."""

from __future__ import annotations

import dataclasses
import json

from workbench.config import CommonConfig, opt
from workbench.device import PRECISIONS
from workbench.errors import WorkbenchError


@dataclasses.dataclass
class EvalConfig(CommonConfig):
    model: str = opt("", "a run directory (uses checkpoints/model.pt) or a model file")
    data_root: str | None = opt(None, "dataset folder (default: the one the model was trained with)")
    batch_size: int = opt(512, "evaluation batch size", ge=1)
    precision: str = opt("fp32", "autocast precision", choices=PRECISIONS)

    def validate(self) -> None:
        if not self.model:
            raise WorkbenchError("missing 'model': pass model=RUN_DIR (a run directory holding checkpoints/model.pt)")


def run(cfg: EvalConfig, run: None) -> dict:
    from workbench.data import get_dataset
    from workbench.device import choose_device
    from workbench.models.saved import load_model
    from workbench.trained import model_file
    from workbench.trainer import evaluate_classifier

    device = choose_device(cfg.device)
    model, spec = load_model(model_file(cfg.model))
    data_root = cfg.data_root if cfg.data_root is not None else spec.get("data_root")
    test = get_dataset(spec["dataset"], "test", data_root=data_root, augment=False)
    result = evaluate_classifier(model.to(device), test, device, cfg.batch_size, cfg.precision)
    out = {"model": str(cfg.model), "dataset": spec["dataset"], "test_acc": result["acc"], "test_loss": result["loss"]}
    print(json.dumps(out))
    return out
