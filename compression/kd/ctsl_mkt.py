"""CTSL-MKT: collaborative teacher-student learning via multiple knowledge transfer (Sun et al., arXiv 2101.08471).

A cohort of students; each student ``i`` minimises

    L_i = CE(z_i, y)
        + w_sd  · T²·KL(p̄_i ‖ p_i)                                  (self-distillation)
        + w_rel · mean_{j≠i} [ψ_D(f_i, sg f_j) + w_angle·ψ_A(f_i, sg f_j)]   (instance relations)
        + w_mut · T²·mean_{j≠i} KL(sg p_j ‖ p_i)                      (online mutual distillation)

with ``p = softmax(z/T)``. Self-distillation: the student's own softened outputs from its temporal
(exponential moving) average ``θ̄_i ← d_t·θ̄_i + (1−d_t)·θ_i``, ``d_t = min(d, (1+t)/(10+t))``
(d = 0.999, warmed up over the first updates), so a student teaches itself with
its smoothed past predictions. Instance relations: RKD distance and angle losses (arXiv 1904.05068)
between the pooled embeddings of the student and each peer, i.e. matching their pairwise distance
and angle structure over the batch. The mutual term is deep mutual learning (``dml_loss``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.cohort import Cohort, CohortMethod, MemberAccuracy
from compression.kd.registry import KD_METHODS, Built, KDContext, new_cohort
from workbench.config import opt
from workbench.distill import dml_loss, kd_loss, rkd_angle_loss, rkd_distance_loss
from workbench.errors import WorkbenchError
from workbench.models import FeatureHooks, frozen_copy
from workbench.models.saved import unwrap_model
from workbench.trainer import Objective, ObjectiveOutput


@dataclasses.dataclass
class CTSLWeights:
    """CTSL-MKT (arXiv 2101.08471)."""

    T: float = opt(3.0, "temperature of self- and mutual distillation", gt=0)
    self_distill: float = opt(1.0, "weight of KL from the student's own moving average")
    relation: float = opt(1.0, "weight of the instance-relation (RKD distance + angle) loss to peers")
    angle: float = opt(2.0, "weight of the angle part inside the relation loss")
    mutual: float = opt(1.0, "weight of the mutual KL to peers")
    ema: float = opt(0.999, "decay of the moving average that gives the self-distillation targets")


class CTSLObjective(Objective):
    """The CTSL-MKT loss (module docstring); terms ``ce``, ``self_distill``, ``relation``, ``mutual``.

    Owns the members' moving averages (frozen copies, checkpointed with the objective).
    """

    def __init__(
        self,
        cohort: Cohort,
        T: float = CTSLWeights.T,
        self_distill: float = CTSLWeights.self_distill,
        relation: float = CTSLWeights.relation,
        angle: float = CTSLWeights.angle,
        mutual: float = CTSLWeights.mutual,
        ema: float = CTSLWeights.ema,
    ) -> None:
        super().__init__()
        cohort.require_members("ctsl-mkt")
        if not 0.0 <= ema < 1.0:
            raise WorkbenchError(f"ctsl-mkt.ema must be in [0, 1), got {ema}")
        # frozen copies that keep each member's train/eval flag until ``train()``/``eval()`` sets theirs
        self.averages = nn.ModuleList(frozen_copy(m).train(m.training) for m in cohort.members)
        self.paths = cohort.member_paths(cohort.members[0].feature_path)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.T, self.decay = T, ema
        self.w = {"self_distill": self_distill, "relation": relation, "mutual": mutual}
        self.w_angle = angle

    def train(self, mode: bool = True) -> CTSLObjective:
        super().train(mode)
        self.averages.eval()
        return self

    @torch.no_grad()
    def _update_averages(self, cohort: nn.Module) -> None:
        # Warm-up of the decay, min(d, (1+t)/(10+t)), so early averages are not dominated by the initial weights.
        self.updates += 1
        t = float(self.updates)
        decay = min(self.decay, (1.0 + t) / (10.0 + t))
        for avg, member in zip(self.averages, unwrap_model(cohort).members, strict=True):
            for pa, pm in zip(avg.parameters(), member.parameters(), strict=True):
                pa.lerp_(pm.detach(), 1.0 - decay)
            for ba, bm in zip(avg.buffers(), member.buffers(), strict=True):
                ba.copy_(bm)

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        if self.training:
            self._update_averages(model)
        with FeatureHooks(model, self.paths) as hooks:
            logits = model(inputs, all_members=True)
            emb = [hooks[p].flatten(1) for p in self.paths]
        with torch.no_grad():
            past = torch.stack([avg(inputs) for avg in self.averages])
        m = logits.shape[0]
        ce = sum(F.cross_entropy(z, targets) for z in logits)
        self_distill = sum(kd_loss(logits[i], past[i], self.T) for i in range(m))
        relation = logits.new_zeros(())
        for i in range(m):
            for j in range(m):
                if i != j:
                    peer = emb[j].detach()
                    pair = rkd_distance_loss(emb[i], peer) + self.w_angle * rkd_angle_loss(emb[i], peer)
                    relation = relation + pair / (m - 1)
        mutual = dml_loss(logits, self.T).sum()
        parts = {"self_distill": self_distill, "relation": relation, "mutual": mutual}
        loss = ce + sum(self.w[k] * v for k, v in parts.items())
        terms = {"ce": ce.detach(), **{k: v.detach() for k, v in parts.items()}}
        return ObjectiveOutput(loss, logits.mean(0), terms)


class CTSLMKT(CohortMethod):
    """CTSL-MKT: a cohort with self-distillation, instance relations and mutual distillation."""

    section = "ctsl"
    weights = CTSLWeights

    def build(self, ctx: KDContext) -> Built:
        model, w = new_cohort(ctx), ctx.weights
        objective = CTSLObjective(model, w.T, w.self_distill, w.relation, w.angle, w.mutual, w.ema)
        return Built(model, objective, [MemberAccuracy()])


KD_METHODS.register("ctsl-mkt", CTSLMKT())
