"""IR: Incremental Representation (arXiv 2403.16221), as an Avalanche strategy.

- Training on task t: a transient linear head over the task's classes only, trained with CE on the
  rotation-expanded batch (joint labels ``4·ŷ + r`` of the local class index ŷ; default) or on a mixup batch
  (``λ·CE(·, y_a) + (1−λ)·CE(·, y_b)``, ``λ ~ Beta(α, α)``); for t > 0 plus the space-maintenance term
  ``λ_d · k · ‖F_new − F_old‖₂`` (un-squared L2 over the augmented batch of embeddings; k = old task units,
  the same term as eTag's L_dist, k-scaling optional).
- After task t: prototype of each new class = mean embedding of its unaugmented, unrotated training images;
  old prototypes are kept, optionally moved by semantic drift compensation (SDC, Yu et al. 2020,
  arXiv 2004.00440): ``p_c += Σ_i w_ic (f_new,i − f_old,i) / Σ_i w_ic``, ``w_ic = exp(−‖f_old,i − p_c‖²/(2σ²))``
  over the current task's images. The transient head is discarded.
- Inference: nearest prototype among the seen classes (cosine similarity by default, L2 as choice).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.models import IRNet
from continual.plugins import UNSEEN
from continual.registry import CIL_METHODS, CILContext, CILMethod
from continual.template import WorkbenchTemplate
from workbench.config import opt
from workbench.distill import embedding_distance, joint_labels, rotate_batch
from workbench.distill.rotation import NUM_ROTATIONS
from workbench.models import frozen_copy


@dataclasses.dataclass
class IRConfig:
    """IR (arXiv 2403.16221) keys."""

    augmentation: str = opt("rotation", "label-expanding augmentation of the transient head", ("rotation", "mixup"))
    mixup_alpha: float = opt(1.0, "Beta(α, α) of mixup", gt=0)
    dist_weight: float = opt(1.0, "λ of the L2 space-maintenance term λ·‖f_new − f_old‖₂", ge=0)
    scale_by_k: bool = opt(True, "multiply the space-maintenance term by k (old task units), as eTag does")
    metric: str = opt("cosine", "nearest-prototype metric", ("cosine", "l2"))
    sdc: bool = opt(False, "semantic drift compensation of old prototypes (Yu et al. 2020)")
    sdc_sigma: float = opt(1.0, "SDC Gaussian kernel width σ in embedding units", gt=0)
    freeze_bn: bool = opt(False, "freeze BatchNorm running statistics after task 0")


def class_prototypes(feats: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """``(len(classes), D)``: the mean of the rows of ``feats`` (N, D) labelled with each class."""
    out = []
    for c in classes:
        mask = labels == c
        if not mask.any():
            raise ValueError(f"class {c} has no samples to build its prototype")
        out.append(feats[mask].mean(dim=0))
    return torch.stack(out)


def prototype_scores(
    feats: torch.Tensor, prototypes: torch.Tensor, available: torch.Tensor, metric: str = "cosine"
) -> torch.Tensor:
    """``(N, C)`` scores of ``feats`` (N, D) against ``prototypes`` (C, D): cosine similarity or −L2 distance.

    Classes whose ``available`` flag is False score ``UNSEEN`` (below any real score).
    """
    if metric == "cosine":
        scores = F.normalize(feats, dim=1) @ F.normalize(prototypes, dim=1).T
    elif metric == "l2":
        scores = -torch.cdist(feats, prototypes)
    else:
        raise ValueError(f"unknown metric {metric!r}; valid: cosine, l2")
    return scores.masked_fill(~available.to(scores.device).unsqueeze(0), UNSEEN)


def nearest_prototype(
    feats: torch.Tensor, prototypes: torch.Tensor, available: torch.Tensor, metric: str = "cosine"
) -> torch.Tensor:
    """``(N,)`` class index of the nearest available prototype."""
    return prototype_scores(feats, prototypes, available, metric).argmax(dim=1)


def sdc_shift(old_feats: torch.Tensor, new_feats: torch.Tensor, prototypes: torch.Tensor, sigma: float) -> torch.Tensor:
    """SDC drift of each prototype ``(P, D)``: Gaussian-weighted mean of ``new_feats − old_feats`` (N, D)."""
    d2 = torch.cdist(prototypes, old_feats).pow(2)
    w = torch.exp(-d2 / (2 * sigma**2))
    drift = new_feats - old_feats
    return (w @ drift) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


class IR(WorkbenchTemplate):
    """IR as an Avalanche ``SupervisedTemplate``: transient head + space maintenance while training,
    class prototypes after each experience, nearest-prototype scores as the eval output."""

    def __init__(self, *, model: IRNet, ir_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=model, freeze_bn=ir_cfg.freeze_bn, **kwargs)
        self.cfg = ir_cfg
        dim = model.backbone.feature_dim
        self.prototypes = torch.zeros(self.num_classes, dim, device=self.device)
        self.available = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        self.old_model: IRNet | None = None
        self.local = torch.full((self.num_classes,), -1, dtype=torch.long, device=self.device)

    def _before_training_exp(self, **kwargs: Any) -> None:
        classes = self.task_classes[self.task]
        self.local.fill_(-1)
        self.local[torch.tensor(classes, device=self.device)] = torch.arange(len(classes), device=self.device)
        width = len(classes) * (NUM_ROTATIONS if self.cfg.augmentation == "rotation" else 1)
        self.model.head = nn.Linear(self.model.backbone.feature_dim, width).to(self.device)
        super()._before_training_exp(**kwargs)

    def _augment(self) -> tuple[torch.Tensor, Any]:
        x, y = self.mb_x, self.local[self.mb_y]
        if self.cfg.augmentation == "rotation":
            return rotate_batch(x), joint_labels(y)
        lam = float(torch.distributions.Beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha).sample())
        perm = torch.randperm(len(x), device=x.device)
        return lam * x + (1 - lam) * x[perm], (y, y[perm], lam)

    def forward(self) -> torch.Tensor:
        if not self.is_training:
            feats = self.model.embed(self.mb_x)
            return prototype_scores(feats, self.prototypes, self.available, self.cfg.metric)
        self._x_aug, self._targets = self._augment()
        self._f = self.model.embed(self._x_aug)
        self._logits = self.model.head(self._f)
        n = len(self.mb_x)
        local_logits = self._logits[:n, ::NUM_ROTATIONS] if self.cfg.augmentation == "rotation" else self._logits[:n]
        out = torch.full((n, self.num_classes), UNSEEN, device=self.device)
        classes = torch.tensor(self.task_classes[self.task], device=self.device)
        out[:, classes] = local_logits.detach()
        return out

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return torch.zeros((), device=self.device)
        if self.cfg.augmentation == "rotation":
            ce = F.cross_entropy(self._logits, self._targets)
        else:
            ya, yb, lam = self._targets
            ce = lam * F.cross_entropy(self._logits, ya) + (1 - lam) * F.cross_entropy(self._logits, yb)
        self.loss_terms = {"ce": ce.detach()}
        if self.old_model is None:
            return ce
        with torch.no_grad():
            f_old = self.old_model.embed(self._x_aug)
        scale = self.old_units() if self.cfg.scale_by_k else 1.0
        dist = self.cfg.dist_weight * scale * embedding_distance(self._f, f_old)
        self.loss_terms["dist"] = dist.detach()
        return ce + dist

    def _after_training_exp(self, **kwargs: Any) -> None:
        self.model.head = nn.Identity()
        classes = self.task_classes[self.task]
        feats, labels = self.train_features(self.model, self.model.embed)
        if self.cfg.sdc and self.old_model is not None and self.available.any():
            old_feats, _ = self.train_features(self.old_model, self.old_model.embed)
            idx = self.available.nonzero().squeeze(1)
            self.prototypes[idx] += sdc_shift(old_feats, feats, self.prototypes[idx], self.cfg.sdc_sigma)
        cls = torch.tensor(classes, device=self.device)
        self.prototypes[cls] = class_prototypes(feats, labels, classes)
        self.available[cls] = True
        self.old_model = frozen_copy(self.model)
        super()._after_training_exp(**kwargs)

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "prototypes": self.prototypes.cpu(),
            "available": self.available.cpu(),
            "old_model": None if self.old_model is None else self.old_model.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.prototypes = state["prototypes"].to(self.device)
        self.available = state["available"].to(self.device)
        if state.get("old_model") is not None:
            old = copy.deepcopy(self.model)
            old.load_state_dict(state["old_model"])
            self.old_model = frozen_copy(old)


class IRMethod(CILMethod):
    """IR on the backbone's embedding with a transient head (``IRNet``)."""

    section = "ir"
    keys = IRConfig
    paper = "arXiv 2403.16221"

    def build(self, ctx: CILContext) -> IR:
        return IR(model=IRNet(ctx.backbone), ir_cfg=ctx.keys, **ctx.template_kwargs())


CIL_METHODS.register("ir", IRMethod())
