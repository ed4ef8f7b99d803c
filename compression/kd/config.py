"""``workbench compress kd`` keys: the common keys below, and one section per registered KD method.

    workbench compress kd method=kd teacher=RUN_DIR student=resnet20 epochs=...
    workbench compress kd method=hsakd teacher=RUN_DIR student=resnet20
    workbench compress kd method=mixskd|mcl|ctsl-mkt|ddnn-ekd model=resnet20 cohort=2

The sections (``kd.T``, ``hsakd.aux``, ``ctsl.ema``, ...) are the methods' own ``weights`` dataclasses,
read from ``compression.kd.KD_METHODS``: a method declares its keys and defaults once, beside its code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from compression.kd.registry import KD_METHODS
from workbench.config import CommonConfig, opt
from workbench.data.config import DataConfig
from workbench.errors import WorkbenchError, unknown
from workbench.trainer import TrainerConfig

DEFAULT_DATASET = "fashion-mnist"


@dataclasses.dataclass
class KDBase(TrainerConfig, DataConfig, CommonConfig):
    """``workbench compress kd`` keys."""

    dataset: str = opt(
        "", f"dataset name (workbench data list); default: the teacher run's, or {DEFAULT_DATASET} without a teacher"
    )
    method: str = opt("kd", "distillation method", choices=KD_METHODS.names())
    teacher: str = opt("", "teacher: a `workbench train` run directory (kd, hsakd)")
    student: str = opt("resnet20", "network trained (student, or every cohort member / the DDNN)")
    model: str = opt("", "alias of student for the teacher-free methods")
    student_widths: list[int] = opt([], "stage widths of a small_cnn student, e.g. 4,8,16 (empty: its default)")
    cohort: int = opt(2, "networks in the cohort (mcl, ctsl-mkt)")

    def validate(self) -> None:
        from workbench.data import DATASETS
        from workbench.models import MODELS, model_options

        entry = KD_METHODS[self.method]
        if self.model and self.model != self.student:
            if self.student not in ("", "resnet20") and self.model != self.student:
                raise WorkbenchError(f"student={self.student} and model={self.model} disagree; give one of them")
            self.student = self.model
        self.model = ""
        if self.student not in MODELS:
            raise unknown("student", self.student, MODELS)
        if not self.dataset:
            self._dataset_from_teacher(entry.needs_teacher)
        if self.dataset not in DATASETS:
            raise unknown("dataset", self.dataset, DATASETS)
        if self.student_widths and "widths" not in model_options(self.student):
            raise WorkbenchError(f"student_widths applies to small_cnn students; '{self.student}' has fixed widths")
        if entry.needs_teacher:
            from workbench.trained import train_run_model_file

            train_run_model_file(self.teacher, "teacher")
        if entry.cohort and self.cohort < 2:
            raise WorkbenchError(f"method={self.method} trains a cohort: cohort must be ≥ 2, got {self.cohort}")
        entry.validate(self)
        self.validate_trainer()

    def _dataset_from_teacher(self, needs_teacher: bool) -> None:
        """No dataset given: the teacher run's dataset (and its data_root unless one is given)."""
        if not needs_teacher:
            self.dataset = DEFAULT_DATASET
            return
        from workbench.runs import load_config_dict
        from workbench.trained import train_run_model_file

        train_run_model_file(self.teacher, "teacher")
        teacher_cfg = load_config_dict(self.teacher)
        self.dataset = str(teacher_cfg.get("dataset") or DEFAULT_DATASET)
        if self.data_root is None and teacher_cfg.get("data_root") is not None:
            self.data_root = str(teacher_cfg["data_root"])


def _sections() -> list[tuple[str, type, Any]]:
    out = []
    for name, entry in KD_METHODS.items():
        if entry.section:
            meta = {"help": name, "choices": None}
            out.append((entry.section, entry.weights, dataclasses.field(default_factory=entry.weights, metadata=meta)))
    return out


KDConfig = dataclasses.make_dataclass("KDConfig", _sections(), bases=(KDBase,))
KDConfig.__module__ = __name__
KDConfig.__doc__ = KDBase.__doc__


def student_spec(cfg: Any, info: Any) -> dict:
    """What ``workbench.models.saved.load_model`` needs to rebuild the student."""
    spec = {
        "name": cfg.student,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "input_shape": [info.in_channels, *info.image_size],
        "dataset": cfg.dataset,
        "data_root": cfg.data_root,
    }
    if cfg.student_widths:
        spec["model_kwargs"] = {"widths": list(cfg.student_widths)}
    return spec
