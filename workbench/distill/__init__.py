"""Every distillation loss used in the workbench: pure functions and small ``nn.Module``s, no training loop.

- ``kd``: Hinton temperature KL and the γ·CE + α·T²·KL objective (arXiv 1503.02531).
- ``feature``: feature MSE with an optional learned projector (CLIP-KD, arXiv 2307.12732).
- ``attention_transfer``: activation attention maps and their L2 loss (arXiv 1612.03928).
- ``relational``: RKD distance/angle (arXiv 1904.05068), similarity-preserving KD (arXiv 1907.09682).
- ``rotation``: 4-rotation batches, joint labels 4·y + r and their KL (HSAKD, arXiv 2107.13715).
- ``group``: mean and Decision-Attention group targets and losses (OPD-DA arXiv 2406.05488,
  OKDDip arXiv 1912.00350).
- ``mutual``: deep mutual learning over a cohort (arXiv 1706.00384).
- ``embedding``: un-squared L2 embedding distance (eTag arXiv 2304.10103, IR arXiv 2403.16221).
- ``dkd``: decoupled KD, target- and non-target-class KL (arXiv 2203.08679).
- ``dist``: DIST's inter- and intra-class Pearson relations (arXiv 2205.10536).

Shape errors raise ``ShapeError`` (a ``WorkbenchError`` and a ``ValueError``).
"""

from workbench.distill._checks import ShapeError
from workbench.distill.attention_transfer import attention_map, attention_transfer_loss
from workbench.distill.embedding import embedding_distance
from workbench.distill.feature import FeatureMimicry, FeatureProjector, feature_mse
from workbench.distill.group import (
    DecisionAttention,
    attention_group_targets,
    decision_loss,
    feature_loss,
    mean_group_targets,
    ramp_weight,
)
from workbench.distill.kd import hinton_objective, kd_loss
from workbench.distill.mutual import dml_loss
from workbench.distill.relational import (
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_matrix,
    similarity_preserving_loss,
)
from workbench.distill.rotation import (
    joint_kd_loss,
    joint_labels,
    rotate_batch,
    rotation_labels,
    unrotated,
)

__all__ = [
    "DecisionAttention",
    "FeatureMimicry",
    "FeatureProjector",
    "ShapeError",
    "attention_group_targets",
    "attention_map",
    "attention_transfer_loss",
    "decision_loss",
    "dml_loss",
    "embedding_distance",
    "feature_loss",
    "feature_mse",
    "hinton_objective",
    "joint_kd_loss",
    "joint_labels",
    "kd_loss",
    "mean_group_targets",
    "pairwise_distances",
    "ramp_weight",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rotate_batch",
    "rotation_labels",
    "similarity_matrix",
    "similarity_preserving_loss",
    "unrotated",
]

# Appended by the compression KD family (MCL's contrastive losses, MixSKD's mixup interpolation targets).
from workbench.distill.contrastive import (  # noqa: E402
    contrastive_loss,
    off_diagonal,
    similarity_logits,
    soft_contrastive_loss,
)
from workbench.distill.mixup import (  # noqa: E402
    interpolate,
    mixup_consistency_loss,
    mixup_cross_entropy,
    mixup_feature_loss,
    sample_lambda,
)

__all__ += [
    "contrastive_loss",
    "interpolate",
    "mixup_consistency_loss",
    "mixup_cross_entropy",
    "mixup_feature_loss",
    "off_diagonal",
    "sample_lambda",
    "similarity_logits",
    "soft_contrastive_loss",
]

# Appended by the KD baselines (issue 19): decoupled KD and DIST's Pearson-relation loss.
from workbench.distill.dist import dist_loss, dist_terms, pearson_distance  # noqa: E402
from workbench.distill.dkd import dkd_loss, dkd_terms, dkd_warmup  # noqa: E402

__all__ += ["dist_loss", "dist_terms", "dkd_loss", "dkd_terms", "dkd_warmup", "pearson_distance"]
