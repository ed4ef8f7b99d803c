"""Typed configs of ``workbench cil run`` and ``workbench cil compare`` (light: no torch import)."""

from __future__ import annotations

import dataclasses

from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError, unknown

METHODS = ("naive", "lwf", "ewc", "joint", "etag", "ir")
BENCHMARK_NAMES = (
    "split-fmnist-5",
    "split-digits-5",
    "cifar100-b0-10",
    "cifar100-b50-5",
    "cifar100-b50-10",
    "tiny-imagenet-b0-10",
)
MODEL_CHOICES = ("auto", "small_cnn", "mlp", "resnet20", "resnet32", "resnet8x4", "resnet18")
SCHEDULES = ("none", "step", "multistep", "cosine")


@dataclasses.dataclass
class ETagConfig:
    """eTag (arXiv 2304.10103) keys."""

    temperature: float = opt(3.0, "KD temperature T over the auxiliary rotation heads")
    kd_weight: float = opt(1.0, "multiplier of L_kd = k·Σ_b T²·KL(old_b ‖ new_b)")
    dist_weight: float = opt(1.0, "multiplier of L_dist = k·‖f_new − f_old‖₂ (un-squared, whole rotated batch)")
    kd_last_head: bool = opt(False, "also distil the last-stage rotation head (paper: branches after stages 1..S−1)")
    freeze_bn: bool = opt(True, "freeze BatchNorm running statistics after task 0")
    gen_steps: int = opt(300, "CVAE generator optimizer steps after each task (on cached features; bounds its cost)")
    gen_lr: float = opt(1e-3, "generator Adam learning rate (paper 1e-4 with 100-epoch solver training)")
    gen_batch_size: int = opt(128, "generator batch size")
    gen_hidden: int = opt(0, "generator hidden width (0 = the embedding width, at least 128: 512 on ResNet-18)")
    latent_dim: int = opt(0, "generator latent size (0 = min(200, embedding width): 200 on ResNet-18)")
    gen_ce_weight: float = opt(1.0, "weight of the task-oriented CE(head(x̂), y) term of the generator")
    gen_distill_weight: float = opt(1e-3, "weight of the generator distillation k·‖G_t − G_{t−1}‖² (per k)")


@dataclasses.dataclass
class IRConfig:
    """IR (arXiv 2403.16221) keys."""

    augmentation: str = opt("rotation", "label-expanding augmentation of the transient head", ("rotation", "mixup"))
    mixup_alpha: float = opt(1.0, "Beta(α, α) of mixup")
    dist_weight: float = opt(1.0, "λ of the L2 space-maintenance term λ·‖f_new − f_old‖₂")
    scale_by_k: bool = opt(True, "multiply the space-maintenance term by k (old task units), as eTag does")
    metric: str = opt("cosine", "nearest-prototype metric", ("cosine", "l2"))
    sdc: bool = opt(False, "semantic drift compensation of old prototypes (Yu et al. 2020)")
    sdc_sigma: float = opt(1.0, "SDC Gaussian kernel width σ in embedding units")
    freeze_bn: bool = opt(False, "freeze BatchNorm running statistics after task 0")


@dataclasses.dataclass
class BaselineConfig:
    """Keys of Avalanche's LwF and EWC."""

    lwf_alpha: float = opt(1.0, "LwF distillation weight α")
    lwf_temperature: float = opt(2.0, "LwF temperature")
    ewc_lambda: float = opt(100.0, "EWC penalty λ")


@dataclasses.dataclass
class CILConfig(CommonConfig):
    """``workbench cil run`` keys."""

    benchmark: str = opt("split-fmnist-5", "class-incremental protocol", BENCHMARK_NAMES)
    method: str = opt("etag", "strategy: Avalanche's naive/lwf/ewc/joint or the workbench's etag/ir", METHODS)
    model: str = opt("auto", "backbone (auto: small_cnn for fmnist, mlp for digits, resnet18 for CIFAR/Tiny)")
    data_root: str | None = opt(None, "dataset folder (default $WORKBENCH_DATA, then ~/.cache/workbench)")
    download: bool = opt(False, "let torchvision download a missing dataset")
    subset: int | None = opt(None, "train on a fixed class-stratified subset of N training images")
    test_subset: int | None = opt(None, "evaluate on a fixed class-stratified subset of N evaluation images")
    validation: float = opt(0.0, "evaluate on this fraction of the training images (per class) instead of the test set")
    augment: bool = opt(False, "random crop (+ flip where the dataset uses it) on training images")
    class_order: list[int] = opt([], "class order; empty = a permutation drawn from the seed (written back)")
    max_tasks: int = opt(0, "stop after this many tasks (0 = the whole stream; for smoke tests)")
    epochs: int = opt(5, "epochs per task")
    batch_size: int = opt(128, "training batch size (before the 4 rotations of eTag/IR)")
    optimizer: str = opt("sgd", "optimizer of every task", ("sgd", "adam", "adamw"))
    lr: float = opt(0.01, "learning rate at the start of every task")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(0.0, "weight decay")
    schedule: str = opt("none", "per-task learning-rate schedule over epochs", SCHEDULES)
    step_size: int = opt(30, "epochs between ÷10 of the step schedule")
    milestones: list[int] = opt([], "epochs where multistep multiplies the lr by gamma")
    gamma: float = opt(0.1, "decay factor of step/multistep")
    eval_batch_size: int = opt(512, "evaluation batch size")
    num_workers: int = opt(0, "DataLoader worker processes")
    log_every: int = opt(20, "log training loss terms every N iterations")
    progress: bool = opt(True, "show a progress bar")
    etag: ETagConfig = dataclasses.field(default_factory=ETagConfig)
    ir: IRConfig = dataclasses.field(default_factory=IRConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)

    def validate(self) -> None:
        if self.model not in MODEL_CHOICES:
            raise unknown("model", self.model, MODEL_CHOICES)
        if self.max_tasks < 0:
            raise WorkbenchError(f"bad value for 'max_tasks': {self.max_tasks}; must be ≥ 0 (0 = all tasks)")
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be ≥ 1")
        if self.lr <= 0:
            raise WorkbenchError(f"bad value for 'lr': {self.lr}; must be > 0")
        if not 0.0 <= self.validation < 1.0:
            raise WorkbenchError(f"bad value for 'validation': {self.validation}; must be in [0, 1)")
        if self.etag.gen_hidden < 0 or self.etag.latent_dim < 0:
            raise WorkbenchError("etag.gen_hidden and etag.latent_dim must be ≥ 0 (0 = sized from the embedding)")
        if self.etag.gen_steps < 0:
            raise WorkbenchError(f"bad value for 'etag.gen_steps': {self.etag.gen_steps}; must be ≥ 0")
        if self.class_order and sorted(self.class_order) != list(range(len(self.class_order))):
            raise WorkbenchError(
                f"bad value for 'class_order': {self.class_order}; must be a permutation of 0..N−1 (N classes)"
            )


@dataclasses.dataclass
class CompareConfig(CILConfig):
    """``workbench cil compare`` keys: every ``cil run`` key, plus the methods and seeds to compare."""

    methods: list[str] = opt(["naive", "lwf", "ewc", "etag", "ir", "joint"], "methods to compare", METHODS)
    seeds: list[int] = opt([0, 1, 2], "seeds of every method")

    def validate(self) -> None:
        super().validate()
        if not self.methods:
            raise WorkbenchError("bad value for 'methods': give at least one method, e.g. methods=naive,etag")
        if not self.seeds:
            raise WorkbenchError("bad value for 'seeds': give at least one seed, e.g. seeds=0,1,2")
        if self.class_order:
            raise WorkbenchError("class_order is drawn per seed in a comparison; drop 'class_order'")
