"""FeCAM: Mahalanobis distance to class prototypes with heterogeneous, shrunk and normalised covariances over a
backbone frozen after the first task (Goswami et al., NeurIPS 2023, arXiv 2309.14062), with Avalanche 0.6's
``FeCAMClassifier`` and ``CurrentDataFeCAMUpdate`` used as shipped.

After every task, on the frozen embeddings of the task's unaugmented training images: Tukey's transform
``φ(f) = f^β`` (β = 0.5), class mean ``μ_c`` and covariance ``Σ_c`` (unbiased) of ``φ(f)``, shrinkage
``Σ ← Σ + γ₁·mean(diag Σ)·I + γ₂·mean(offdiag Σ)·(1 − I)`` (Avalanche applies it twice), normalisation to a
correlation matrix ``Σ_ij / (σ_i σ_j)``. Prediction: ``argmin_c (n(φ(f)) − n(μ_c))ᵀ Σ_c⁺ (n(φ(f)) − n(μ_c))`` over the
seen classes, ``n`` the L2 normalisation, ``⁺`` the pseudo-inverse.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from continual.frozen import Embedder, FrozenBackbone
from continual.ncm import classifier_state, load_classifier_state
from continual.registry import CIL_METHODS, CILContext, CILMethod
from workbench.config import opt


@dataclasses.dataclass
class FeCAMConfig:
    """FeCAM keys (the paper's and Avalanche's defaults)."""

    tukey: bool = opt(True, "Tukey's ladder-of-powers transform f^β of the embeddings")
    tukey_power: float = opt(0.5, "β of Tukey's transform (0 = log)", ge=0)
    shrinkage: bool = opt(True, "covariance shrinkage")
    shrink1: float = opt(1.0, "γ₁: weight of mean(diag Σ)·I", ge=0)
    shrink2: float = opt(1.0, "γ₂: weight of mean(offdiag Σ)·(1 − I)", ge=0)
    covnorm: bool = opt(True, "normalise each covariance to a correlation matrix")


class FeCAMMethod(CILMethod):
    section = "fecam"
    keys = FeCAMConfig
    min_first_task = 2
    paper = "arXiv 2309.14062"

    def build(self, ctx: CILContext) -> FrozenBackbone:
        from avalanche.models import FeCAMClassifier, TrainEvalModel
        from avalanche.training.plugins import CurrentDataFeCAMUpdate

        from workbench.models import get_module

        k = ctx.keys
        backbone = ctx.backbone
        head = get_module(backbone, backbone.head_path)
        classifier = FeCAMClassifier(
            tukey=k.tukey,
            shrinkage=k.shrinkage,
            shrink1=k.shrink1,
            shrink2=k.shrink2,
            tukey1=k.tukey_power,
            covnorm=k.covnorm,
        )
        model = TrainEvalModel(Embedder(backbone), head, classifier)
        kwargs = ctx.template_kwargs()
        kwargs["plugins"] = [*kwargs["plugins"], CurrentDataFeCAMUpdate()]
        return FrozenBackbone(model=model, backbone=backbone, **kwargs)

    def state(self, strategy: Any) -> dict[str, Any]:
        dicts = ("class_means_dict", "class_cov_dict")
        return {**strategy.state(), "classifier": classifier_state(strategy.model.eval_classifier, dicts)}

    def load_state(self, strategy: Any, state: dict[str, Any]) -> None:
        strategy.load_state(state)
        load_classifier_state(strategy.model.eval_classifier, state["classifier"], strategy.device)


CIL_METHODS.register("fecam", FeCAMMethod())
