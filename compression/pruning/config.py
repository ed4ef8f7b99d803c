"""The keys of ``workbench compress sglp`` (layer pruning) and ``workbench compress prune`` (filter pruning).

Both start from a trained model (``model=RUN_DIR`` of ``workbench train``) and refuse bad input in one line
before anything is written. ``PruneConfig`` is the common keys plus every registered filter method's own
keys (``FilterMethod.keys``), so a method declares its keys and their defaults once, beside its code.
"""

from __future__ import annotations

import dataclasses

import compression.pruning.filters  # noqa: F401  (registers the filter methods before their keys are read)
from compression.pipeline import SourceConfig
from compression.pruning import FILTER_METHODS, SGLP_RULES
from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError
from workbench.trained import model_file
from workbench.trainer import TrainerConfig


@dataclasses.dataclass
class SGLPConfig(TrainerConfig, SourceConfig, CommonConfig):
    """``workbench compress sglp`` keys. The trainer keys (lr, batch_size, ...) set the fine-tuning."""

    keep_units: float = opt(0.5, "fraction of the prunable residual units to keep (ignored when target_macs > 0)")
    target_macs: float = opt(0.0, "keep at most this fraction of the MACs instead (0 = use keep_units)")
    baseline: str = opt(
        "sglp", "unit selection: sglp (the method) or a baseline at the same budget", SGLP_RULES.names()
    )
    finetune_epochs: int = opt(20, "fine-tuning epochs after removal (0 = none)")
    epochs: int = opt(0, "not used by sglp: the fine-tuning length is finetune_epochs")
    lr: float = opt(0.01, "fine-tuning learning rate")
    recovery: str = opt("ce", "fine-tuning loss: ce, or kd from the unpruned model", ("ce", "kd"))
    kd_T: float = opt(4.0, "KD temperature (recovery=kd)", gt=0)
    kd_alpha: float = opt(0.9, "weight of T²·KL (recovery=kd)", ge=0)
    kd_gamma: float = opt(0.1, "weight of CE (recovery=kd)", ge=0)
    probe_samples: int = opt(512, "training images in the CKA probe set")
    probe_batch_size: int = opt(128, "batch size of the CKA pass")
    cka_estimator: str = opt(
        "biased", "CKA estimator: full-batch biased (paper) or minibatch unbiased HSIC", ("biased", "unbiased")
    )
    segments: int = opt(0, "number of segments (0 = the largest k whose loss drop exceeds segment_threshold)")
    segment_cost: str = opt(
        "sum_squares",
        "Fisher segmentation cost: sum of squares of the CKA column sums (paper), -mean intra-segment CKA, or "
        "the sum of squares of the units' normalised Gram matrices (sum over a segment of 1 - CKA / its size)",
        ("sum_squares", "neg_mean_cka", "cka_sum_squares"),
    )
    segment_threshold: float = opt(0.05, "loss-drop threshold of the automatic number of segments")
    keep_per_segment: list[int] = opt([], "units kept per segment (default: in proportion to segment size)")
    importance: str = opt(
        "subset", "gradient-norm proxy over candidate subsets, or per unit (cheap)", ("subset", "unit")
    )
    importance_direction: str = opt(
        "min",
        "keep the subset whose pruned net has the smallest gradient norm (trained nets), or the largest",
        ("min", "max"),
    )
    importance_bn: str = opt(
        "train",
        "BatchNorm statistics of the gradient-norm proxy: the candidate's own batch statistics (train), or the "
        "unpruned net's running ones (eval)",
        ("eval", "train"),
    )
    importance_batches: int = opt(2, "training batches B of the gradient-norm proxy")
    importance_batch_size: int = opt(64, "batch size of the gradient-norm proxy")
    subset_cap: int = opt(64, "exhaustive subset search up to this many subsets per segment, greedy above")

    def validate(self) -> None:
        model_file(self.model)
        self.validate_trainer_keys()
        if self.epochs:
            raise WorkbenchError("sglp fine-tunes for finetune_epochs; drop 'epochs' and set finetune_epochs=N")
        if not 0.0 <= self.keep_units < 1.0 and not self.target_macs:
            raise WorkbenchError(f"keep_units={self.keep_units} must be in [0, 1): the fraction of units to keep")
        if not 0.0 <= self.target_macs < 1.0:
            raise WorkbenchError(f"target_macs={self.target_macs} must be in (0, 1): the fraction of MACs to keep")
        if self.finetune_epochs < 0:
            raise WorkbenchError(f"finetune_epochs={self.finetune_epochs} must be >= 0")
        for key in ("probe_samples", "probe_batch_size", "importance_batches", "importance_batch_size", "subset_cap"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")

    def validate_trainer_keys(self) -> None:
        for key in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")
        if self.lr <= 0:
            raise WorkbenchError(f"bad value for 'lr': {self.lr}; must be > 0")


@dataclasses.dataclass
class PruneBase(TrainerConfig, SourceConfig, CommonConfig):
    """``workbench compress prune`` keys. ``epochs``: training with the mask schedule, or fine-tuning (cpmc, pfgdf).

    The methods' own keys come from the registry (see :data:`PruneConfig`)."""

    method: str = opt("sfp", "filter-pruning method", FILTER_METHODS.names())
    target_macs: float = opt(0.5, "keep at most this fraction of the MACs")
    epochs: int = opt(10, "epochs of training with the mask schedule (sfp family) or of fine-tuning (cpmc, pfgdf)")
    finetune_epochs: int = opt(
        0,
        "epochs of fine-tuning the physically pruned model after the mask schedule; cpmc and pfgdf fine-tune "
        "epochs + finetune_epochs, so every method trains equally long",
    )
    scope: str = opt(
        "internal",
        "channels pruned: internal (convs coupled to no other layer) or all (every coupled group of Torch-Pruning's "
        "dependency graph, residual streams included, scored as a group)",
        ("internal", "all"),
    )
    round_to: int = opt(1, "keep a multiple of this many channels in every pruned layer or group (1 = any)")
    lr: float = opt(0.01, "learning rate")
    speed_batch: int = opt(64, "batch size of the CPU inference-speed measurement")
    speed_repeats: int = opt(5, "repeats of the CPU inference-speed measurement (median)")
    speed_fold_bn: bool = opt(
        False, "fold the BatchNorms into the convolutions of both models before the CPU speed measurement"
    )

    def validate(self) -> None:
        model_file(self.model)
        self.validate_trainer()
        if not 0.0 < self.target_macs < 1.0:
            raise WorkbenchError(f"target_macs={self.target_macs} must be in (0, 1): the fraction of MACs to keep")
        if self.finetune_epochs < 0:
            raise WorkbenchError(f"finetune_epochs={self.finetune_epochs} must be >= 0")
        FILTER_METHODS[self.method].validate(self)
        for key in ("speed_batch", "speed_repeats", "round_to"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")


def _method_keys() -> tuple[type, ...]:
    seen: list[type] = []
    for _, method in FILTER_METHODS.items():
        if method.keys not in seen:
            seen.append(method.keys)
    # only the most derived keys classes are bases (their parents come with them), so the MRO is consistent
    return tuple(k for k in seen if not any(o is not k and issubclass(o, k) for o in seen))


PruneConfig = dataclasses.dataclass(
    type(
        "PruneConfig",
        (*_method_keys(), PruneBase),
        {"__doc__": PruneBase.__doc__, "__module__": __name__, "__annotations__": {}},
    )
)
