"""Pruning tools of the shared core (METHODS.md §4 and §6).

- ``cka``: linear CKA (biased full batch, unbiased minibatch HSIC), the one-pass L × L matrix.
- ``segmentation``: Fisher optimal segmentation by exact dynamic programming, choice of k.
- ``importance``: gradient-norm importance of a network and of its units.
- ``units``: residual units whose shapes match, and their replacement by identity.
- ``channels``: physical channel removal through Torch-Pruning's dependency graph; the prunable channel
  groups of a scope (``internal``: convs coupled to nothing; ``all``: every coupled group, residual streams
  included), their check, and ``round_to`` rounding.
- ``reshape``: resize a fresh model so that a pruned model's state_dict loads.
- ``criteria``: L1/L2 filter norms, group importance (mean over coupled layers), PFGDF's Gaussian band,
  CPMC's multi-criteria importance.
- ``masks``: filter mask schedules as trainer callbacks (SFP, SRFP, ASRFP, GHFP).

MACs and parameter counts come from ``workbench.flops``.
"""

from workbench.prune.channels import (
    SCOPES,
    Groups,
    check_groups,
    dependency_graph,
    independent_convs,
    plan_from_masks,
    plan_from_scores,
    prunable_groups,
    prune_channels,
    round_plan,
    rounded_count,
)
from workbench.prune.cka import CKAAccumulator, biased_cka_matrix, cka_matrix, linear_cka, naive_cka_matrix
from workbench.prune.criteria import (
    cpmc_criteria,
    cpmc_importance,
    group_scores,
    l1_norm,
    l2_norm,
    pfgdf_mask,
    pfgdf_scores,
)
from workbench.prune.importance import gradient_norm, unit_gradient_norms
from workbench.prune.masks import (
    AsymptoticSofterFilterPruning,
    FilterMaskSchedule,
    GraduallyHardFilterPruning,
    SofterFilterPruning,
    SoftFilterPruning,
)
from workbench.prune.reshape import fit_modules_to_state_dict
from workbench.prune.segmentation import (
    Segmentation,
    SegmentationChoice,
    choose_num_segments,
    fisher_segmentation,
    optimal_segmentations,
    similarity_segmentation,
)
from workbench.prune.units import remove_units, residual_units, unit_shapes

__all__ = [
    "AsymptoticSofterFilterPruning",
    "CKAAccumulator",
    "FilterMaskSchedule",
    "GraduallyHardFilterPruning",
    "Groups",
    "SCOPES",
    "Segmentation",
    "SegmentationChoice",
    "SoftFilterPruning",
    "SofterFilterPruning",
    "biased_cka_matrix",
    "check_groups",
    "choose_num_segments",
    "cka_matrix",
    "cpmc_criteria",
    "cpmc_importance",
    "dependency_graph",
    "fisher_segmentation",
    "fit_modules_to_state_dict",
    "gradient_norm",
    "group_scores",
    "independent_convs",
    "l1_norm",
    "l2_norm",
    "linear_cka",
    "naive_cka_matrix",
    "optimal_segmentations",
    "pfgdf_mask",
    "pfgdf_scores",
    "plan_from_masks",
    "plan_from_scores",
    "prunable_groups",
    "prune_channels",
    "remove_units",
    "residual_units",
    "round_plan",
    "rounded_count",
    "similarity_segmentation",
    "unit_gradient_norms",
    "unit_shapes",
]
