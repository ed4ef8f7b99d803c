"""MCL: mutual contrastive learning of a cohort (Yang et al., arXiv 2104.12565), on top of CE.

Each member ``a`` has an embedding head ``h_a`` (linear–ReLU–linear to ``embed_dim``) on its pooled
features; ``v_a = normalize(h_a(f_a(x)))``. With similarity logits ``s(u, w)_ij = ⟨u_i, w_j⟩ / τ``
(τ = 0.1) and positives = same label, as in the authors' released supervised loss
(``losses/cifar_sup_mcl_loss.py`` of winycg/MCL):

- VCL (vanilla, within a member): contrastive loss of ``s(v_a, v_a)``;
- ICL (interactive, across members): contrastive loss of ``s(v_a, v_b)``;
  in both the anchor's own sample (the diagonal) is left out of the positives and of the denominator;
- soft VCL: ``T²·KL(sg q(s(v_b, v_b)) ‖ q(s(v_a, v_a)))`` — member ``a``'s contrastive distribution learns
  from its peer's (T = 3; full rows, diagonal included, as released);
- soft ICL: ``T²·KL(sg q(s(v_b, v_a)) ‖ q(s(v_a, v_b)))`` — the cross-member distributions learn from
  each other.

``L = Σ_a CE_a + w_vcl·Σ_a VCL_a + w_icl·Σ_{a≠b} ICL_ab + w_soft_vcl·Σ_{a≠b} softVCL_ab
+ w_soft_icl·Σ_{a≠b} softICL_ab`` with the authors' weights w_vcl = w_icl = 0.1, w_soft_vcl = w_soft_icl = 1
(their CIFAR command line); every pairwise sum is averaged over the ``M−1`` peers (the released code sums
them: the same for the default cohort of 2). ``mcl.icl_self_positive=true`` makes the anchor's own sample in
the other member a positive of ICL and keeps it in the denominator (the workbench's earlier choice).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.cohort import Cohort, CohortMethod, MemberAccuracy
from compression.kd.registry import KD_METHODS, Built, KDContext, new_cohort
from workbench.config import opt
from workbench.distill import contrastive_loss, similarity_logits, soft_contrastive_loss
from workbench.models import FeatureHooks
from workbench.trainer import Objective, ObjectiveOutput


@dataclasses.dataclass
class MCLWeights:
    """MCL (arXiv 2104.12565)."""

    tau: float = opt(0.1, "contrastive temperature τ", gt=0)
    T: float = opt(3.0, "temperature of the soft contrastive KL", gt=0)
    vcl: float = opt(0.1, "weight of vanilla (within-network) contrastive learning (authors' 0.1)")
    icl: float = opt(0.1, "weight of interactive (cross-network) contrastive learning (authors' 0.1)")
    soft_vcl: float = opt(1.0, "weight of the soft VCL KL")
    soft_icl: float = opt(1.0, "weight of the soft ICL KL")
    embed_dim: int = opt(128, "width of the contrastive embedding heads")
    icl_self_positive: bool = opt(
        False, "ICL counts the anchor's own sample in the other network as a positive (released code: excluded)"
    )


class MCLObjective(Objective):
    """The MCL loss (module docstring); terms ``ce``, ``vcl``, ``icl``, ``soft_vcl``, ``soft_icl``."""

    def __init__(
        self,
        cohort: Cohort,
        tau: float = MCLWeights.tau,
        T: float = MCLWeights.T,
        vcl: float = MCLWeights.vcl,
        icl: float = MCLWeights.icl,
        soft_vcl: float = MCLWeights.soft_vcl,
        soft_icl: float = MCLWeights.soft_icl,
        embed_dim: int = MCLWeights.embed_dim,
        icl_self_positive: bool = MCLWeights.icl_self_positive,
    ) -> None:
        super().__init__()
        cohort.require_members("mcl")
        first = cohort.members[0]
        self.paths = cohort.member_paths(first.feature_path)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(m.feature_dim, m.feature_dim), nn.ReLU(), nn.Linear(m.feature_dim, embed_dim))
            for m in cohort.members
        )
        self.tau, self.T = tau, T
        self.icl_self_positive = icl_self_positive
        self.w = {"vcl": vcl, "icl": icl, "soft_vcl": soft_vcl, "soft_icl": soft_icl}

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        with FeatureHooks(model, self.paths) as hooks:
            logits = model(inputs, all_members=True)
            emb = [head(hooks[p].flatten(1)) for head, p in zip(self.heads, self.paths, strict=True)]
        m = logits.shape[0]
        ce = sum(F.cross_entropy(z, targets) for z in logits)
        sims = [[similarity_logits(emb[a], emb[b], self.tau) for b in range(m)] for a in range(m)]
        vcl = sum(contrastive_loss(sims[a][a], targets, targets, exclude_self=True) for a in range(m))
        icl = soft_vcl = soft_icl = logits.new_zeros(())
        for a in range(m):
            for b in range(m):
                if a == b:
                    continue
                icl_ab = contrastive_loss(sims[a][b], targets, targets, exclude_self=not self.icl_self_positive)
                icl = icl + icl_ab / (m - 1)
                soft_vcl = soft_vcl + soft_contrastive_loss(sims[a][a], sims[b][b].detach(), self.T) / (m - 1)
                soft_icl = soft_icl + soft_contrastive_loss(sims[a][b], sims[b][a].detach(), self.T) / (m - 1)
        parts = {"vcl": vcl, "icl": icl, "soft_vcl": soft_vcl, "soft_icl": soft_icl}
        loss = ce + sum(self.w[k] * v for k, v in parts.items())
        terms = {"ce": ce.detach(), **{k: v.detach() for k, v in parts.items()}}
        return ObjectiveOutput(loss, logits.mean(0), terms)


class MCL(CohortMethod):
    """MCL: mutual contrastive learning of a cohort."""

    section = "mcl"
    weights = MCLWeights

    def build(self, ctx: KDContext) -> Built:
        model, w = new_cohort(ctx), ctx.weights
        objective = MCLObjective(
            model, w.tau, w.T, w.vcl, w.icl, w.soft_vcl, w.soft_icl, w.embed_dim, w.icl_self_positive
        )
        return Built(model, objective, [MemberAccuracy()])


KD_METHODS.register("mcl", MCL())
