"""MixSKD: self-knowledge distillation from mixup (Yang et al., arXiv 2208.05768).

For a batch ``x`` paired with a permutation ``π`` and ``λ ~ Beta(α, α)``, the mixed batch is
``x̃ = λ·x + (1−λ)·x_π``. The network sees ``[x; x̃]``; auxiliary classifiers after the intermediate
stages (``AuxiliaryBranches``) and the backbone classifier give logits ``z^h``, the stages give feature
maps ``F^k``. With ``I(t) = λ·t + (1−λ)·t_π`` (the interpolation of the pair's outputs):

    L_task  = Σ_h [ CE(z^h(x), y) + λ·CE(z^h(x̃), y) + (1−λ)·CE(z^h(x̃), y_π) ]
    L_logit = Σ_h T²·KL(sg I(z^h(x)) ‖ z^h(x̃)) + T²·KL(sg z^h(x̃) ‖ I(z^h(x)))     (both directions)
    L_feat  = Σ_k mean((F^k(x̃) − I(F^k(x)))²)
    L_self  = task loss of the self-teacher + T²·KL(sg p_st ‖ p_backbone) on [x; x̃]

The self-teacher aggregates the multi-stage feature maps (1x1 conv + BN + ReLU to the last stage's
width, average-pooled to its resolution, summed) and classifies them; it supervises the backbone
classifier. ``L = L_task + w_logit·L_logit + w_feat·L_feat + w_self·L_self``. The paper's adversarial
feature discriminator is left out.

``mixskd.recipe=released`` follows the authors' released CIFAR training script (Self-KD-Lib,
``main_mixskd_cifar.py``) instead. Every path h (each auxiliary branch, run to the last stage, and the
backbone) has final features ``G^h`` (the last stage's shape) and logits ``z^h``:

    L_task  = Σ_h CE(z^h(x), y)                                          (no mixup CE on the heads)
    L_logit = Σ_{h aux} T²·KL(sg z^h(x̃) ‖ I(z^h(x))) + T²·KL(sg I(z^h(x)) ‖ z^h(x̃))
    L_feat  = Σ_h mean((I(G^h(x)) − G^h(x̃))²)                           (final features only)
    L_self  = mixup CE of the self-teacher on both of its inputs
              + T²·KL(sg st(G(x̃)) ‖ I(z^b(x))) + T²·KL(sg st(I(G(x))) ‖ z^b(x̃))   (crossed, backbone b)

where the self-teacher ``st`` fuses the paths' final features (interpolated, or of the mixed image). The
released script logs the self-teacher's mixup CE without adding it to the loss, which leaves the
self-teacher untrained; here it is added, so the self-teacher learns.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.config import opt
from workbench.distill import (
    interpolate,
    kd_loss,
    mixup_consistency_loss,
    mixup_cross_entropy,
    mixup_feature_loss,
    sample_lambda,
)
from workbench.errors import WorkbenchError
from workbench.models import AuxiliaryBranches, FeatureHooks
from workbench.trainer import Objective, ObjectiveOutput


@dataclasses.dataclass
class MixSKDWeights:
    """MixSKD (arXiv 2208.05768)."""

    alpha: float = opt(0.4, "λ ~ Beta(alpha, alpha) of the mixup pairs")
    T: float = opt(3.0, "temperature", gt=0)
    logit: float = opt(1.0, "weight of the both-direction KL between mixed and interpolated logits")
    feature: float = opt(1.0, "weight of the MSE between mixed and interpolated stage feature maps")
    self_teacher: float = opt(1.0, "weight of the self-teacher's CE and its KL into the backbone classifier")
    recipe: str = opt(
        "paper",
        "paper: the paper's description (module docstring); released: the authors' training script (final-feature "
        "MSE, crossed backbone/self-teacher KL, CE on the original images only)",
        ("paper", "released"),
    )


def stage_widths(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shapes (without batch) of every stage of ``model`` on one probe input."""
    was = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad(), FeatureHooks(model, model.stage_names) as feats:
        model(torch.zeros((2, *input_shape), device=param.device, dtype=param.dtype))
        shapes = [tuple(feats[p].shape[1:]) for p in model.stage_names]
    model.train(was)
    return shapes


class SelfTeacher(nn.Module):
    """Aggregates the stage feature maps into one map of the last stage's shape and classifies it."""

    def __init__(self, shapes: list[tuple[int, ...]], num_classes: int) -> None:
        super().__init__()
        if any(len(s) != 3 for s in shapes):
            raise WorkbenchError("mixskd's self-teacher needs convolutional stages (4-D feature maps); use a CNN")
        width, *size = shapes[-1]
        self.size = tuple(size)
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()) for c, _, _ in shapes
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fused = sum(F.adaptive_avg_pool2d(lat(f), self.size) for lat, f in zip(self.lateral, feats, strict=True))
        return self.fc(F.adaptive_avg_pool2d(fused, 1).flatten(1))


class MixSKDObjective(Objective):
    """The MixSKD loss (module docstring); terms ``ce``, ``logit_kd``, ``feature``, ``self_teacher_ce``,
    ``self_teacher_kd``, ``lam``.

    Args:
        model: the network being trained (shapes its branches and self-teacher).
        num_classes: C.
        input_shape: one sample's shape (C, H, W).
        alpha: Beta(α, α) of λ. T: temperature. logit / feature / self_teacher: weights.
        recipe: ``"paper"`` or ``"released"`` (module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        input_shape: tuple[int, ...],
        alpha: float = MixSKDWeights.alpha,
        T: float = MixSKDWeights.T,
        logit: float = MixSKDWeights.logit,
        feature: float = MixSKDWeights.feature,
        self_teacher: float = MixSKDWeights.self_teacher,
        recipe: str = MixSKDWeights.recipe,
    ) -> None:
        super().__init__()
        stages = len(model.stage_names)
        if stages < 2:
            raise WorkbenchError(f"mixskd needs a model with at least 2 stages, got {stages}")
        if recipe not in ("paper", "released"):
            raise WorkbenchError(f"mixskd.recipe must be paper or released, got '{recipe}'")
        self.paths = tuple(model.stage_names)
        self.branches = AuxiliaryBranches(model, num_classes, stages=range(stages - 1))
        shapes = stage_widths(model, input_shape)
        # released: the self-teacher fuses every path's final features (the last stage's shape)
        self.self_teacher = SelfTeacher(shapes if recipe == "paper" else [shapes[-1]] * stages, num_classes)
        self.alpha, self.T, self.recipe = alpha, T, recipe
        self.w_logit, self.w_feat, self.w_self = logit, feature, self_teacher

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        n = inputs.shape[0]
        lam = sample_lambda(self.alpha)
        perm = torch.randperm(n, device=inputs.device)
        both = torch.cat([inputs, interpolate(inputs, lam, perm)])
        if self.recipe == "released":
            return self._released(model, both, targets, lam, perm)
        with FeatureHooks(model, self.paths) as hooks:
            logits = model(both)
            feats = [hooks[p] for p in self.paths]
        heads = [*self.branches(feats[:-1]), logits]
        ce = logit_kd = logits.new_zeros(())
        for z in heads:
            z_orig, z_mix = z[:n], z[n:]
            ce = ce + F.cross_entropy(z_orig, targets) + mixup_cross_entropy(z_mix, targets, lam, perm)
            logit_kd = logit_kd + mixup_consistency_loss(z_mix, interpolate(z_orig, lam, perm), self.T)
        feature = sum(mixup_feature_loss(f[n:], interpolate(f[:n], lam, perm)) for f in feats)
        st = self.self_teacher(feats)
        st_ce = F.cross_entropy(st[:n], targets) + mixup_cross_entropy(st[n:], targets, lam, perm)
        st_kd = kd_loss(logits, st.detach(), self.T)
        return self._output(logits[:n], lam, ce, logit_kd, feature, st_ce, st_kd)

    def _output(
        self,
        logits: torch.Tensor,
        lam: float,
        ce: torch.Tensor,
        logit_kd: torch.Tensor,
        feature: torch.Tensor,
        st_ce: torch.Tensor,
        st_kd: torch.Tensor,
    ) -> ObjectiveOutput:
        """Both recipes' total, CE + w_logit·logit KD + w_feat·feature + w_self·(self-teacher CE + KD), and terms."""
        loss = ce + self.w_logit * logit_kd + self.w_feat * feature + self.w_self * (st_ce + st_kd)
        terms = {
            "ce": ce.detach(),
            "logit_kd": logit_kd.detach(),
            "feature": feature.detach(),
            "self_teacher_ce": st_ce.detach(),
            "self_teacher_kd": st_kd.detach(),
            "lam": logits.new_tensor(lam),
        }
        return ObjectiveOutput(loss, logits, terms)

    def _released(
        self, model: nn.Module, both: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor
    ) -> ObjectiveOutput:
        """The released recipe's loss (module docstring) on ``[x; x̃]``."""
        n = targets.shape[0]
        bodies = [f"branches.{k}.body" for k in range(len(self.branches.branches))]
        with FeatureHooks(model, self.paths) as hooks, FeatureHooks(self.branches, bodies) as branch_hooks:
            logits = model(both)
            aux = self.branches([hooks[p] for p in self.paths[:-1]])
            finals = [*(branch_hooks[b] for b in bodies), hooks[self.paths[-1]]]
        ce = sum(F.cross_entropy(z[:n], targets) for z in [*aux, logits])
        logit_kd = sum(mixup_consistency_loss(z[n:], interpolate(z[:n], lam, perm), self.T) for z in aux)
        feature = sum(mixup_feature_loss(g[n:], interpolate(g[:n], lam, perm)) for g in finals)
        st_int = self.self_teacher([interpolate(g[:n], lam, perm) for g in finals])
        st_mix = self.self_teacher([g[n:] for g in finals])
        st_ce = mixup_cross_entropy(st_int, targets, lam, perm) + mixup_cross_entropy(st_mix, targets, lam, perm)
        st_kd = kd_loss(interpolate(logits[:n], lam, perm), st_mix.detach(), self.T) + kd_loss(
            logits[n:], st_int.detach(), self.T
        )
        return self._output(logits[:n], lam, ce, logit_kd, feature, st_ce, st_kd)


class MixSKD(KDMethod):
    """MixSKD: self-KD of one network from mixup."""

    section = "mixskd"
    weights = MixSKDWeights

    def build(self, ctx: KDContext) -> Built:
        model, w = new_student(ctx), ctx.weights
        objective = MixSKDObjective(
            model, ctx.info.num_classes, ctx.input_shape, w.alpha, w.T, w.logit, w.feature, w.self_teacher, w.recipe
        )
        return Built(model, objective)


KD_METHODS.register("mixskd", MixSKD())
