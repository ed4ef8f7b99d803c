"""NCM: nearest class mean over a backbone frozen after the first task (Rebuffi et al., iCaRL's classifier,
arXiv 1611.07725; the exemplar-free baseline of FeCAM, arXiv 2309.14062), with Avalanche 0.6's
``NCMClassifier`` and ``CurrentDataNCMUpdate`` used as shipped.

After every task the mean of each new class is taken over the frozen embeddings of its unaugmented training
images; with ``ncm.normalize`` (Avalanche's default) embeddings are L2-normalised first and the mean is
re-normalised: ``μ_c = m_c / ‖m_c‖``, ``m_c = mean_i f_i / ‖f_i‖``. Prediction:
``argmin_c ‖f/‖f‖ − μ_c‖₂`` over the seen classes (plain Euclidean ``argmin_c ‖f − μ_c‖₂`` without it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from continual.frozen import Embedder, FrozenBackbone
from continual.registry import CIL_METHODS, CILContext, CILMethod
from workbench.config import opt


@dataclasses.dataclass
class NCMConfig:
    """NCM keys."""

    normalize: bool = opt(True, "L2-normalise embeddings and class means (Avalanche's NCMClassifier default)")


def classifier_state(classifier: Any, dicts: tuple[str, ...]) -> dict[str, Any]:
    """An Avalanche class-mean classifier's dictionaries (class id → tensor) and ``max_class``."""
    out: dict[str, Any] = {"max_class": int(classifier.max_class)}
    for name in dicts:
        out[name] = {int(k): v.detach().cpu() for k, v in getattr(classifier, name).items()}
    return out


def load_classifier_state(classifier: Any, state: dict[str, Any], device: Any) -> None:
    """Restore :func:`classifier_state` through the classifier's own ``replace_*`` methods."""
    if state["class_means_dict"]:
        classifier.replace_class_means_dict({k: v.to(device) for k, v in state["class_means_dict"].items()})
    if "class_cov_dict" in state and state["class_cov_dict"]:
        classifier.replace_class_cov_dict({k: v.to(device) for k, v in state["class_cov_dict"].items()})
    classifier.max_class = max(int(classifier.max_class), state["max_class"])


class NCMMethod(CILMethod):
    section = "ncm"
    keys = NCMConfig
    min_first_task = 2
    paper = "arXiv 1611.07725 (NCM), baseline of arXiv 2309.14062"

    def build(self, ctx: CILContext) -> FrozenBackbone:
        from avalanche.models import NCMClassifier, TrainEvalModel
        from avalanche.training.plugins import CurrentDataNCMUpdate

        from workbench.models import get_module

        backbone = ctx.backbone
        head = get_module(backbone, backbone.head_path)
        model = TrainEvalModel(Embedder(backbone), head, NCMClassifier(normalize=ctx.keys.normalize))
        kwargs = ctx.template_kwargs()
        kwargs["plugins"] = [*kwargs["plugins"], CurrentDataNCMUpdate()]
        return FrozenBackbone(model=model, backbone=backbone, **kwargs)

    def state(self, strategy: Any) -> dict[str, Any]:
        return {
            **strategy.state(),
            "classifier": classifier_state(strategy.model.eval_classifier, ("class_means_dict",)),
        }

    def load_state(self, strategy: Any, state: dict[str, Any]) -> None:
        strategy.load_state(state)
        load_classifier_state(strategy.model.eval_classifier, state["classifier"], strategy.device)


CIL_METHODS.register("ncm", NCMMethod())
