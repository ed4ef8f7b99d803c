"""``workbench compress kd``: the knowledge-distillation family on the one workbench Trainer.

    workbench compress kd method=kd teacher=RUN_DIR student=resnet20 epochs=...
    workbench compress kd method=hsakd teacher=RUN_DIR student=resnet20
    workbench compress kd method=mixskd|mcl|ctsl-mkt|ddnn-ekd model=resnet20 cohort=2

Light at import time (the CLI reads the config schema for --help); torch loads when the command runs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from workbench.commands.train import DataConfig
from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError, unknown
from workbench.runs import Run
from workbench.trainer import TrainerConfig

METHODS = ("student", "kd", "hsakd", "mixskd", "mcl", "ctsl-mkt", "ddnn-ekd")
TEACHER_METHODS = ("kd", "hsakd")
COHORT_METHODS = ("mcl", "ctsl-mkt")


def _section(cls: type, help_text: str) -> Any:
    return dataclasses.field(default_factory=cls, metadata={"help": help_text, "choices": None})


@dataclasses.dataclass
class KDWeights:
    """Hinton KD (arXiv 1503.02531): γ·CE + α·T²·KL."""

    T: float = opt(4.0, "temperature")
    gamma: float = opt(0.1, "weight γ of the cross-entropy")
    alpha: float = opt(0.9, "weight α of T²·KL(p_T ‖ p_S)")


@dataclasses.dataclass
class HSAKDWeights:
    """HSAKD (arXiv 2107.13715)."""

    T: float = opt(3.0, "temperature of the branch and main-head KL")
    ce: float = opt(1.0, "weight of the cross-entropy on unrotated images")
    aux: float = opt(1.0, "weight of Σ_k T²·KL between matching teacher/student branches (all rotations)")
    main: float = opt(1.0, "weight of T²·KL between the main heads")
    aux_epochs: int = opt(0, "epochs training the teacher's branches, backbone frozen (0 = epochs)")
    aux_lr: float = opt(0.0, "learning rate of the teacher's branches (0 = lr)")


@dataclasses.dataclass
class MixSKDWeights:
    """MixSKD (arXiv 2208.05768)."""

    alpha: float = opt(0.4, "λ ~ Beta(alpha, alpha) of the mixup pairs")
    T: float = opt(3.0, "temperature")
    logit: float = opt(1.0, "weight of the both-direction KL between mixed and interpolated logits")
    feature: float = opt(1.0, "weight of the MSE between mixed and interpolated stage feature maps")
    self_teacher: float = opt(1.0, "weight of the self-teacher's CE and its KL into the backbone classifier")


@dataclasses.dataclass
class MCLWeights:
    """MCL (arXiv 2104.12565)."""

    tau: float = opt(0.1, "contrastive temperature τ")
    T: float = opt(3.0, "temperature of the soft contrastive KL")
    vcl: float = opt(1.0, "weight of vanilla (within-network) contrastive learning")
    icl: float = opt(1.0, "weight of interactive (cross-network) contrastive learning")
    soft_vcl: float = opt(1.0, "weight of the soft VCL KL")
    soft_icl: float = opt(1.0, "weight of the soft ICL KL")
    embed_dim: int = opt(128, "width of the contrastive embedding heads")


@dataclasses.dataclass
class CTSLWeights:
    """CTSL-MKT (arXiv 2101.08471)."""

    T: float = opt(3.0, "temperature of self- and mutual distillation")
    self_distill: float = opt(1.0, "weight of KL from the student's own moving average")
    relation: float = opt(1.0, "weight of the instance-relation (RKD distance + angle) loss to peers")
    angle: float = opt(2.0, "weight of the angle part inside the relation loss")
    mutual: float = opt(1.0, "weight of the mutual KL to peers")
    ema: float = opt(0.999, "decay of the moving average that gives the self-distillation targets")


@dataclasses.dataclass
class DDNNWeights:
    """DDNN with embedded KD (arXiv 2103.00793)."""

    depths: list[int] = opt([1, 2], "blocks per stage of the sub-networks (the full network is always trained)")
    T: float = opt(4.0, "temperature of KL(p_full ‖ p_sub)")
    kl: float = opt(1.0, "weight of T²·KL(p_full ‖ p_sub)")
    at: float = opt(10.0, "weight of the attention-map loss (element mean; 1000, the AT code's, diverged on digits)")
    sub_bn_stats: bool = opt(
        False, "let sub-network forwards update the shared BatchNorm running statistics (off: the full net's only)"
    )
    calib_batches: int = opt(20, "training batches that re-estimate BN statistics before a sub-network is evaluated")


@dataclasses.dataclass
class KDConfig(TrainerConfig, DataConfig, CommonConfig):
    """``workbench compress kd`` keys."""

    method: str = opt("kd", "distillation method", choices=METHODS)
    teacher: str = opt("", "teacher: a `workbench train` run directory (kd, hsakd)")
    student: str = opt("resnet20", "network trained (student, or every cohort member / the DDNN)")
    model: str = opt("", "alias of student for the teacher-free methods")
    student_widths: list[int] = opt([], "stage widths of a small_cnn student, e.g. 4,8,16 (empty: its default)")
    cohort: int = opt(2, "networks in the cohort (mcl, ctsl-mkt)")
    kd: KDWeights = _section(KDWeights, "kd")
    hsakd: HSAKDWeights = _section(HSAKDWeights, "hsakd")
    mixskd: MixSKDWeights = _section(MixSKDWeights, "mixskd")
    mcl: MCLWeights = _section(MCLWeights, "mcl")
    ctsl: CTSLWeights = _section(CTSLWeights, "ctsl-mkt")
    ddnn: DDNNWeights = _section(DDNNWeights, "ddnn-ekd")

    def validate(self) -> None:
        from workbench.data import DATASETS
        from workbench.models import MODELS, model_options

        if self.model and self.model != self.student:
            if self.student not in ("", "resnet20") and self.model != self.student:
                raise WorkbenchError(f"student={self.student} and model={self.model} disagree; give one of them")
            self.student = self.model
        self.model = ""
        if self.student not in MODELS:
            raise unknown("student", self.student, MODELS)
        if self.dataset not in DATASETS:
            raise unknown("dataset", self.dataset, DATASETS)
        if self.student_widths and "widths" not in model_options(self.student):
            raise WorkbenchError(f"student_widths applies to small_cnn students; '{self.student}' has fixed widths")
        if self.method in TEACHER_METHODS:
            if not self.teacher:
                raise WorkbenchError(f"method={self.method} needs teacher=<a `workbench train` run directory>")
            from compression.kd.teacher import check_teacher_dir

            check_teacher_dir(self.teacher)
        if self.method in COHORT_METHODS and self.cohort < 2:
            raise WorkbenchError(f"method={self.method} trains a cohort: cohort must be ≥ 2, got {self.cohort}")
        if self.method == "ddnn-ekd":
            from compression.kd.ddnn_ekd import check_depths, make_depth_selectable
            from workbench.models import build_model

            probe = make_depth_selectable(build_model(self.student, num_classes=2, in_channels=1), self.student)
            check_depths(probe, self.ddnn.depths)
        self.validate_trainer()


def student_spec(cfg: KDConfig, info: Any) -> dict:
    """What ``workbench.checkpoint.load_model`` needs to rebuild the student."""
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


def run_kd(cfg: KDConfig, run: Run) -> dict:
    from compression.kd.run import run_method

    start = time.perf_counter()
    summary = run_method(cfg, run)
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    run.write_summary(summary)
    return summary
